"""`--scoring harness` against EleutherAI's lm-evaluation-harness itself, offline, on the same tiny local model
and the same MMLU- and CMMLU-format files: same per-question choices, log-likelihoods equal to 1e-4."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.harness_tasks import run_lm_eval, write_harness_tasks
from medtrain.cli import app

SAMPLES = Path(__file__).resolve().parent.parent / "data_prep" / "samples"


@pytest.mark.parametrize("task", ["mmlu", "cmmlu"])
def test_harness_scoring_matches_lm_evaluation_harness(task, hf_model, tmp_path):
    limit = 8
    names = write_harness_tasks(task, SAMPLES / task, tmp_path / "tasks")
    res = run_lm_eval(hf_model, tmp_path / "tasks", names, limit=limit, log_samples=True)
    reference = {n: sorted(res["samples"][n], key=lambda s: s["doc_id"]) for n in names}
    r = CliRunner().invoke(app, ["eval", task, "--model", str(hf_model), "--data", str(SAMPLES / task), "--out",
                                 str(tmp_path / "ours"), "--scoring", "harness", "--limit", str(limit)])
    assert r.exit_code == 0, r.output
    ours = [json.loads(x) for x in (tmp_path / "ours" / "predictions.jsonl").read_text().splitlines()]
    compared = 0
    for name in names:
        subject = name.removeprefix(f"medtrain_{task}_")
        mine = [p for p in ours if p["subject"] == subject]
        assert len(mine) == len(reference[name]) == limit
        for p, ref in zip(mine, reference[name], strict=True):
            ref_ll = [resp[0][0] for resp in ref["resps"]]
            assert p["scores"] == pytest.approx(ref_ll, abs=1e-4)
            assert p["extracted"] == "ABCD"[max(range(4), key=lambda k: ref_ll[k])]
            assert p["prompt"] == ref["arguments"][0][0]  # the very same context string
            compared += 1
    assert compared == limit * len(names)
