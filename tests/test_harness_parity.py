"""`--scoring harness` against EleutherAI's lm-evaluation-harness itself, offline, on the same tiny local model
and the same MMLU- and CMMLU-format files: same per-question choices, log-likelihoods equal to 1e-4."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.harness_tasks import write_harness_tasks
from medtrain.cli import app

SAMPLES = Path(__file__).resolve().parent.parent / "data_prep" / "samples"


def run_lm_eval(model: Path, task_dir: Path, names: list[str], limit: int) -> dict[str, list]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32", tasks=names,
                                  num_fewshot=5, task_manager=TaskManager(include_path=str(task_dir)),
                                  log_samples=True, batch_size=1, device="cpu", limit=limit)
    return {n: sorted(res["samples"][n], key=lambda s: s["doc_id"]) for n in names}


@pytest.mark.parametrize("task", ["mmlu", "cmmlu"])
def test_harness_scoring_matches_lm_evaluation_harness(task, hf_model, tmp_path):
    limit = 8
    names = write_harness_tasks(task, SAMPLES / task, tmp_path / "tasks")
    reference = run_lm_eval(hf_model, tmp_path / "tasks", names, limit)
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
