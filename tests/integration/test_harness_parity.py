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
    from medtrain.train.model_dir import init_model_dir

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


def _medqa_records(n: int = 8) -> list[dict]:
    """GBaker/MedQA-USMLE-4-options-hf's schema (what lm-eval's medqa_4options reads): sent1, ending0..3, label."""
    stems = ["A 45-year-old man presents with crushing chest pain radiating to the left arm. Which enzyme rises "
             "first?", "A child has a barking cough and stridor. What is the most likely pathogen?",
             "Which drug reverses heparin?", "A woman has a butterfly rash and joint pain. Which antibody is most "
             "specific?"]
    ends = [["Troponin I", "CK-MB", "LDH", "Myoglobin"], ["Parainfluenza virus", "RSV", "Adenovirus", "Influenza"],
            ["Protamine sulfate", "Vitamin K", "Naloxone", "Flumazenil"], ["Anti-dsDNA", "ANA", "Anti-Ro", "RF"]]
    return [{"sent1": stems[i % 4], **{f"ending{k}": e for k, e in enumerate(ends[i % 4])}, "label": (i * 3) % 4,
             "id": f"q{i}"} for i in range(n)]


def _medmcqa_records(n: int = 8) -> list[dict]:
    """openlifescienceai/medmcqa's schema (what lm-eval's medmcqa reads): question, opa..opd, cop from 0."""
    return [{"id": f"m{i}", "question": f"Which vitamin deficiency causes condition {i}?", "opa": "Vitamin A",
             "opb": "Vitamin B12", "opc": "Vitamin C", "opd": "Vitamin D", "cop": [2, 0, 3, 1][i % 4],
             "choice_type": "single", "exp": "", "subject_name": "Biochemistry", "topic_name": None}
            for i in range(n)]


@pytest.mark.parametrize("task", ["medqa", "medmcqa"])
def test_medqa_and_medmcqa_match_lm_evaluation_harness_question_by_question(task, hf_model, tmp_path):
    """The English side of Table 4's mixture, scored as lm-eval's medqa_4options and medmcqa tasks score it (their
    own doc_to_text from the installed lm-eval, on records in their Hugging Face schema)."""
    data = tmp_path / "data"
    data.mkdir()
    records = _medqa_records() if task == "medqa" else _medmcqa_records()
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    names = write_harness_tasks(task, data, tmp_path / "tasks")
    res = run_lm_eval(hf_model, tmp_path / "tasks", names, shots=0, limit=len(records), log_samples=True)
    reference = sorted(res["samples"][names[0]], key=lambda s: s["doc_id"])
    ours = _ours(task, hf_model, data, tmp_path / "ours", "harness", len(records))
    assert len(ours) == len(reference) == len(records)
    gold = [r["label"] if task == "medqa" else r["cop"] for r in records]
    for p, ref, g in zip(ours, reference, gold, strict=True):
        ref_ll = [resp[0][0] for resp in ref["resps"]]
        assert p["prompt"] == ref["arguments"][0][0]  # lm-eval's own doc_to_text, character for character
        assert p["scores"] == pytest.approx(ref_ll, abs=1e-4)
        assert p["extracted"] == "ABCD"[max(range(4), key=lambda k: ref_ll[k])] and p["gold"] == "ABCD"[g]


def test_five_option_medqa_in_the_official_schema_scores_every_letter(hf_model, tmp_path):
    """The official US 5-option release ({question, options: {A..E}, answer_idx}): five scores a question, the
    choice among all five, under both conventions."""
    data = tmp_path / "data"
    data.mkdir()
    recs = [{"question": f"Question {i}: which is right?", "options": {k: f"option {k}{i}" for k in "ABCDE"},
             "answer_idx": "ABCDE"[i % 5], "answer": f"option {'ABCDE'[i % 5]}{i}"} for i in range(10)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for scoring in ("original", "harness"):
        preds = _ours("medqa", hf_model, data, tmp_path / scoring, scoring, 10)
        assert all(len(p["scores"]) == 5 for p in preds)
        assert [p["gold"] for p in preds] == [r["answer_idx"] for r in recs]
        assert all(p["extracted"] == "ABCDE"[max(range(5), key=lambda k: p["scores"][k])] for p in preds)
        assert "E. option E0\nAnswer:" in preds[0]["prompt"]


def test_medmcqa_official_release_counts_cop_from_one_and_an_ambiguous_file_is_refused(hf_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    recs = [{**r, "cop": c} for r, c in zip(_medmcqa_records(4), [3, 1, 4, 2], strict=True)]  # official: from 1
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert [p["gold"] for p in _ours("medmcqa", hf_model, data, tmp_path / "o", "original", 4)] == list("CADB")
    (data / "test.jsonl").write_text("".join(json.dumps({**r, "cop": 2}) + "\n" for r in recs))
    r = CliRunner().invoke(app, ["eval", "medmcqa", "--model", str(hf_model), "--data", str(data), "--out",
                                 str(tmp_path / "amb")])
    assert r.exit_code == 2 and "fits both" in r.output
