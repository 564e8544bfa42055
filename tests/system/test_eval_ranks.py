"""Eval spread over ranks through the real launcher gives the same results as one process, question by question."""

import json
from pathlib import Path

import pytest
import torch

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


# ----- extraction -----------------------------------------------------------------------------------------


# ----- metrics --------------------------------------------------------------------------------------------


# ----- real benchmark files --------------------------------------------------------------------------------


# ----- bad input ----------------------------------------------------------------------------------------------


# ----- a real (tiny, random) Hugging Face model -------------------------------------------------------------


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward has no `logits_to_keep` (remote-code and older models)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, attention_mask, position_ids, use_cache):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache)


# ----- placement: device, dtype, batch size ------------------------------------------------------------------


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


# ----- tables that never mix conventions; sweep cells that never go stale ----------------------------------------
