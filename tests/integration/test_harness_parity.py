"""Both scoring conventions against their reference implementations, offline, on tiny Llamas (random weights):

- `--scoring harness` against EleutherAI's lm-evaluation-harness 0.4.13 itself: the same context strings, the
  same choice on every question, log-likelihoods equal to 1e-4. On the shipped samples with a locally trained BPE
  tokenizer, and on the real MMLU and CMMLU files with the real Llama-2 and Chinese-LLaMA-2 tokenizers (where
  leaving out lm-eval's BOS moved log-likelihoods by up to 0.07 and changed about a third of the choices).
- `--scoring original` against the MMLU/CMMLU scripts' own computation, written out here unbatched:
  `tokenizer(prompt).input_ids` (BOS included by the tokenizer), one forward pass, the last position's logits of
  `tokenizer(letter).input_ids[-1]`.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import shared_data
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.eval.harness_tasks import run_lm_eval, write_harness_tasks

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"
MEDICAL = ["anatomy", "clinical_knowledge", "college_medicine"]  # subjects both MMLU and CMMLU have
TOKENIZERS = {"llama2": ("tokenizers", "llama2", "derived_hf_fast"), "chinese-llama2": ("tokenizers", "chinese-llama2")}


@pytest.fixture(scope="session")
def real_tokenizer_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny Llamas carrying the real Llama-2 (vocab 32,000) and Chinese-LLaMA-2 (55,296) tokenizers."""
    from medtrain.model_dir import init_model_dir

    root = tmp_path_factory.mktemp("real_tok_models")
    return {name: init_model_dir("tiny", shared_data(*parts), root / name, seed=0)
            for name, parts in TOKENIZERS.items()}


def _ours(task: str, model: Path, data: Path, out: Path, scoring: str, limit: int, *subjects: str) -> list[dict]:
    args = ["eval", task, "--model", str(model), "--data", str(data), "--out", str(out), "--scoring", scoring,
            "--limit", str(limit)]
    for s in subjects:
        args += ["--subject", s]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def _assert_same_as_lm_eval(task: str, model: Path, data: Path, tmp_path: Path, limit: int,
                            subjects: list[str] | None = None) -> None:
    names = write_harness_tasks(task, data, tmp_path / "tasks", subjects)
    res = run_lm_eval(model, tmp_path / "tasks", names, limit=limit, log_samples=True)
    reference = {n: sorted(res["samples"][n], key=lambda s: s["doc_id"]) for n in names}
    ours = _ours(task, model, data, tmp_path / "ours", "harness", limit, *(subjects or []))
    compared = 0
    for name in names:
        subject = name.removeprefix(f"medtrain_{task}_")
        mine = [p for p in ours if p["subject"] == subject]
        assert len(mine) == len(reference[name]) == limit
        for p, ref in zip(mine, reference[name], strict=True):
            ref_ll = [resp[0][0] for resp in ref["resps"]]
            assert p["prompt"] == ref["arguments"][0][0]  # the very same context string
            assert p["scores"] == pytest.approx(ref_ll, abs=1e-4)
            assert p["extracted"] == "ABCD"[max(range(4), key=lambda k: ref_ll[k])]
            compared += 1
    assert compared == limit * len(names)


@pytest.mark.parametrize("task", ["mmlu", "cmmlu"])
def test_harness_scoring_matches_lm_evaluation_harness(task, hf_model, tmp_path):
    _assert_same_as_lm_eval(task, hf_model, SAMPLES / task, tmp_path, limit=8)


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
@pytest.mark.parametrize("task", ["mmlu", "cmmlu"])
def test_harness_scoring_matches_lm_eval_with_real_tokenizers_on_real_files(task, tokenizer, real_tokenizer_models,
                                                                              tmp_path):
    _assert_same_as_lm_eval(task, real_tokenizer_models[tokenizer], shared_data(task), tmp_path, limit=6,
                            subjects=MEDICAL)


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
@pytest.mark.parametrize("task", ["mmlu", "cmmlu"])
def test_original_scoring_matches_the_scripts_own_computation(task, tokenizer, real_tokenizer_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = real_tokenizer_models[tokenizer]
    ours = _ours(task, model_dir, shared_data(task), tmp_path / "ours", "original", 4, "anatomy")
    results = json.loads((tmp_path / "ours" / "results.json").read_text())
    assert results["config"]["bos"] is True  # both tokenizers put BOS first, so the scripts' prompts start with it
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    letters = [tok(x).input_ids[-1] for x in "ABCD"]
    for p in ours:
        input_ids = tok(p["prompt"], return_tensors="pt").input_ids
        assert input_ids[0, 0].item() == tok.bos_token_id
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0, -1]
        assert p["scores"] == pytest.approx([logits[i].item() for i in letters], abs=1e-4)
