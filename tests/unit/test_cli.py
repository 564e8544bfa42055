"""The command surface's shared rules: --version, one overwrite rule for every output, help that explains."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medtrain.cli import app

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


def test_version_names_medtrain_and_its_dependencies():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("medtrain 0.") and "deepspeed" in r.output


@pytest.mark.parametrize("command", [
    ["tokenizer", "--input", str(SAMPLES / "huatuo_sample.jsonl"), "--vocab-size", "300"],
    ["hostfile", "--nodes", "2", "--slots", "1"],
    ["config", "deepspeed", "--preset", "cpu-zero3"],
])
def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, command):
    out = tmp_path / "out"
    first = CliRunner().invoke(app, [*command, "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*command, "--out", str(out)])
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output
    forced = CliRunner().invoke(app, [*command, "--out", str(out), "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging leftovers


@pytest.mark.parametrize("mode, extracted", [("hard", "无答案"), ("paper", "AD"), ("cmexam", "AD")])
def test_each_extract_mode_reads_an_output_its_own_way(tmp_path, mode, extracted):
    """--extract as the help explains it: hard reads only the '答案: X' line the SFT template taught; paper and
    cmexam read the letters an answer names in prose. The mode used is recorded in results.json."""
    import json

    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "0", "output": "答案是A和D"}, ensure_ascii=False) + "\n")
    out = tmp_path / mode
    data = str(SAMPLES / "cmexam_test.csv")
    r = CliRunner().invoke(app, ["eval", "cmexam", "--predictions", str(preds), "--data", data, "--limit", "1",
                                 "--extract", mode, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["extract"] == mode
    assert json.loads((out / "predictions.jsonl").read_text())["extracted"] == extracted


@pytest.mark.parametrize("command", [[], ["launch"], ["prep", "huatuo"], ["contamination"], ["eval", "cmexam"]])
def test_help_shows_no_type_for_switches_but_keeps_it_for_values(command):
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert r.exit_code == 0 and "<bool>" not in r.output
    assert command == [] or "<path>" in r.output or "<str>" in r.output or "<list[str]>" in r.output


def test_shell_completion_is_on_and_completes_commands_and_options():
    import os
    import subprocess
    import sys

    assert "--install-completion" in CliRunner().invoke(app, ["--help"]).output
    env = {**os.environ, "_MEDTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "medtrain con", "COMP_CWORD": "1"}
    code = "from medtrain.cli import app; app(prog_name='medtrain')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split()
    assert sorted(out) == ["config", "contamination"]
    env |= {"COMP_WORDS": "medtrain launch --dry", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split()
    assert out == ["--dry-run"]
