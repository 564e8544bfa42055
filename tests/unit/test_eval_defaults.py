"""The card's third command with nothing named, and the eval inputs users get wrong: each answered with the file
or command they need."""

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from medtrain.cli import app

SAMPLE = Path(__file__).resolve().parents[2] / "data_prep" / "samples" / "cmexam_test.csv"


def test_eval_cmexam_with_nothing_named_names_the_export_and_cmexams_release(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["eval", "cmexam"])
    assert r.exit_code == 2
    assert "runs/sft_cmexam_reasoning/export" in r.output and "medtrain launch --recipe paper/sft_cmexam_reasoning" \
        in r.output
    assert "test_with_annotations.csv from CMExam's release (https://github.com/williamliujl/CMExam)" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_eval_cmexam_defaults_its_data_and_output_and_says_so_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data/cmexam").mkdir(parents=True)
    shutil.copy(SAMPLE, "data/cmexam/test_with_annotations.csv")
    import csv

    rows = list(csv.DictReader(SAMPLE.open(encoding="utf-8")))
    Path("preds.jsonl").write_text("".join(json.dumps({"id": i, "output": f"答案: {x['Answer']}"}) + "\n"
                                           for i, x in enumerate(rows)), encoding="utf-8")
    r = CliRunner().invoke(app, ["eval", "cmexam", "--predictions", "preds.jsonl"])
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[0]
    assert first == ("eval cmexam: data data/cmexam/test_with_annotations.csv (CMExam's test split); out "
                     "results/cmexam/preds")
    assert json.loads(Path("results/cmexam/preds/results.json").read_text())["metrics"]["acc"] == 100.0


def _fake_checkpoint(root: Path) -> Path:
    ckpt = root / "runs" / "sft" / "checkpoints" / "step_000010"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "COMPLETE").write_text("")
    return ckpt


def test_eval_on_a_checkpoint_or_run_directory_names_medtrain_export(tmp_path):
    ckpt = _fake_checkpoint(tmp_path)
    run = ckpt.parent.parent
    for model, said in ((ckpt, f"medtrain export --checkpoint {ckpt} --out {run / 'export-step_000010'}"),
                        (run, f"medtrain export --checkpoint {run} --out {run / 'export'}")):
        r = CliRunner().invoke(app, ["eval", "cmexam", "--model", str(model), "--data", str(SAMPLE), "--out",
                                     str(tmp_path / "out")])
        assert r.exit_code == 2 and said in r.output, r.output
        assert "sentencepiece" not in r.output and not (tmp_path / "out").exists()


def test_eval_data_given_a_prepared_dataset_names_the_csv_it_wants(tmp_path):
    data = tmp_path / "cmexam_prepared"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    r = CliRunner().invoke(app, ["eval", "cmexam", "--predictions", str(tmp_path / "p.jsonl"), "--data", str(data),
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert "is a prepared (tokenized) training dataset; eval reads CMExam's CSV" in r.output
    assert "no such CMExam CSV" not in r.output
