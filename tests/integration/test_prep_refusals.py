"""Prep refuses what would train the wrong thing, and says why: reasoning data without reasoning, placeholder
explanations, options joined by a literal \\n, a skip reason that eats most of a file, and a mixture whose parts
were prepared with different templates (with the command that fixes it)."""

import csv
import json

import pytest
from train_fixtures import said
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.data_prep.format import DatasetError
from medtrain.data_prep.pipeline import prep

HEADER = ["Question", "Options", "Answer", "Explanation", "Disease Group", "Clinical Department"]
ROWS = [
    ["急性心肌梗死最常见的死亡原因是", "A 心律失常\nB 心力衰竭\nC 心源性休克\nD 心脏破裂", "A",
     "急性心肌梗死早期死亡多由室颤等心律失常所致。", "循环系统疾病", "心内科"],
    ["缺铁性贫血的典型血象是", "A 大细胞性贫血\nB 小细胞低色素性贫血\nC 正细胞性贫血\nD 巨幼细胞贫血", "B",
     "请等待更新", "血液系统疾病", "血液科"],
    ["维生素C缺乏可引起", "A 夜盲症\nB 佝偻病\nC 坏血病\nD 脚气病", "C", "暂无解析", "营养疾病", "内科"],
]


def _csv(path, rows, header=HEADER, literal_newlines=False):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            row = [c.replace("\n", "\\n") if literal_newlines and i == 1 else c for i, c in enumerate(row)]
            w.writerow(row[:len(header)])
    return path


def _prep(*args, **kw):
    kw.setdefault("workers", 1)
    with said() as logs:
        m = prep(*args, **kw)
    return m, "\n".join(logs)


def test_placeholder_explanations_are_dropped_and_counted_the_answer_kept(tmp_path, tiny):
    m, log = _prep("cmexam", [_csv(tmp_path / "t.csv", ROWS)], tiny["tok"], tmp_path / "o", mode="with_reasoning")
    assert m["num_docs"] == 3 and m["stats"]["placeholder_explanations_dropped"] == 2
    assert m["stats"]["without_explanation"] == 2 and "dropped 2 placeholder explanations" in log
    from medtrain.data_prep.format import TokenDataset
    from medtrain.data_prep.tokenizer import Encoder

    enc, data = Encoder(tiny["tok"]), TokenDataset(tmp_path / "o")
    texts = [enc.decode(data[i]) for i in range(3)]
    assert not any("请等待更新" in t or "暂无解析" in t for t in texts)
    assert "心律失常所致" in texts[0]


def test_options_joined_by_a_literal_backslash_n_are_split(tmp_path, tiny):
    m, log = _prep("cmexam", [_csv(tmp_path / "t.csv", ROWS, literal_newlines=True)], tiny["tok"],
                   tmp_path / "o", mode="answer_only")
    assert m["num_docs"] == 3 and m["stats"]["skipped"] == {}


def test_with_reasoning_without_any_explanation_is_refused_unless_allowed(tmp_path, tiny):
    no_column = _csv(tmp_path / "t.csv", ROWS, header=HEADER[:3])
    with pytest.raises(DatasetError, match="no record has an explanation .* --mode answer_only, or "
                                           "--allow-missing-explanations"):
        _prep("cmexam", [no_column], tiny["tok"], tmp_path / "o", mode="with_reasoning")
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(app, ["prep", "cmexam", "--input", str(no_column), "--tokenizer", str(tiny["tok"]),
                                 "--out", str(tmp_path / "o"), "--allow-missing-explanations", "--workers", "1"])
    assert r.exit_code == 0, r.output


def test_a_reason_that_skips_most_records_is_explained(tmp_path, tiny):
    # options joined by " | " read as one option A: every answer but A is "not in the options"
    broken = [[q, o.replace("\n", " | "), a, e, g, d] for q, o, a, e, g, d in (ROWS[1], ROWS[2], ROWS[1])]
    m, log = _prep("cmexam", [_csv(tmp_path / "t.csv", [ROWS[0], *broken])], tiny["tok"], tmp_path / "o",
                   mode="answer_only")
    assert m["num_docs"] == 1
    assert "3 of 4 records skipped as answer_not_in_options: the options were not read as lettered lines" in log


def test_a_mixture_of_defaults_works_and_another_template_names_the_command(tmp_path, tiny):
    medqa = tmp_path / "medqa.jsonl"
    medqa.write_text(json.dumps({"question": "Drug of choice for absence seizures?", "answer": "Ethosuximide",
                                 "options": {"A": "Ethosuximide", "B": "Phenytoin", "C": "Valproate",
                                             "D": "Carbamazepine"}, "meta_info": "step1", "answer_idx": "A"}) + "\n")
    cm = _csv(tmp_path / "cm.csv", ROWS)
    run = CliRunner()
    for name, src in (("cmexam", cm), ("medqa", medqa)):  # each with its default --mode
        r = run.invoke(app, ["prep", name, "--input", str(src), "--tokenizer", str(tiny["tok"]), "--out",
                             str(tmp_path / name), "--workers", "1"])
        assert r.exit_code == 0, r.output
    mixed = run.invoke(app, ["prep", "mix", "--input", f"{tmp_path / 'cmexam'}:1", "--input",
                             f"{tmp_path / 'medqa'}:1", "--out", str(tmp_path / "mix")])
    assert mixed.exit_code == 0, mixed.output
    r = run.invoke(app, ["prep", "medqa", "--input", str(medqa), "--tokenizer", str(tiny["tok"]), "--out",
                         str(tmp_path / "medqa_ao"), "--mode", "answer_only", "--workers", "1"])
    assert r.exit_code == 0, r.output
    refused = run.invoke(app, ["prep", "mix", "--input", f"{tmp_path / 'cmexam'}:1", "--input",
                               f"{tmp_path / 'medqa_ao'}:1", "--out", str(tmp_path / "mix2")])
    assert refused.exit_code == 2
    assert "re-run `medtrain prep medqa --mode with_reasoning" in refused.output
