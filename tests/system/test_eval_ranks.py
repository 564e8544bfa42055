"""Eval spread over ranks through the real launcher gives the same results as one process, question by question."""

import json
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


# ----- one eval over the ranks of a launch ----------------------------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


@pytest.mark.launch
@pytest.mark.parametrize("task, extra", [
    ("cmexam", ["--data", str(SAMPLES / "cmexam_test.csv"), "--limit", "20", "--max-new-tokens", "12",
                "--batch-size", "4"]),
    ("mmlu", ["--data", str(SAMPLES / "mmlu"), "--limit", "5", "--batch-size", "2", "--scoring", "harness"]),
])
def test_eval_across_two_ranks_equals_one_process_question_by_question(hf_model, tmp_path, task, extra):
    from train_fixtures import check, cli

    one, two = tmp_path / "one", tmp_path / "two"
    check(cli("eval", task, "--model", str(hf_model), "--out", str(one), *extra))
    r = check(cli("eval", task, "--model", str(hf_model), "--out", str(two), *extra, "--hosts",
                  "hostfiles/localhost", "--launcher", "local"))
    a = [json.loads(x) for x in (one / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (two / "predictions.jsonl").read_text().splitlines()]
    assert len(a) == len(b) > 0 and a == b
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert ra["metrics"] == rb["metrics"] and (ra["config"]["ranks"], rb["config"]["ranks"]) == (1, 2)
    assert not (tmp_path / ".two.ranks").exists() and "acc" in r.stdout
