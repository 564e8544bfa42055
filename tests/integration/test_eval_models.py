"""Eval on real Hugging Face models (tiny Llamas, random weights): batched generation, both multiple-choice
scoring conventions, the report's rows, auto placement, and the sweep's eval cells."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medtrain.cli import app

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


def _eval(*args):
    return CliRunner().invoke(app, ["eval", *args])


# ----- a real (tiny, random) Hugging Face model -------------------------------------------------------------


def test_batched_left_padded_generation_equals_one_at_a_time(hf_model):
    from medtrain.eval.generate import generate
    from medtrain.eval.model import load_model

    model, tok, _ = load_model(hf_model)
    prompts = ["问题: 高血压的典型表现是", "短", "问题: 确诊肺结核最常用的检查是什么？请回答", "答案:"]
    batched = generate(model, tok, prompts, batch_size=4, max_new_tokens=12, progress=False)
    single = [generate(model, tok, [p], batch_size=1, max_new_tokens=12, progress=False)[0] for p in prompts]
    assert batched == single


def test_cmexam_generation_writes_results_predictions_and_table(hf_model, tmp_path):
    r = _eval("cmexam", "--model", str(hf_model), "--data", str(SAMPLES / "cmexam_test.csv"), "--out",
              str(tmp_path / "o"), "--limit", "6", "--max-new-tokens", "8")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["template"]["name"] == "plain_mcq" and res["extract"] == "paper"  # a base model: plain prompt
    preds = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and all({"prompt", "output", "extracted", "rule", "gold", "correct"} <= set(p)
                                   for p in preds)
    # each output is the model's own greedy continuation of its prompt (BOS first, as training saw it), one at a
    # time through Hugging Face generate; the score is what the predictions say
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(hf_model), AutoTokenizer.from_pretrained(hf_model)
    for p in preds:
        ids = torch.tensor([[tok.bos_token_id, *tok(p["prompt"], add_special_tokens=False)["input_ids"]]])
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
        assert p["output"] == tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
        assert p["correct"] == (p["extracted"] == p["gold"]) and p["gold"]
    assert any(p["output"].strip() for p in preds)
    assert res["metrics"]["acc"] == pytest.approx(100 * sum(p["correct"] for p in preds) / 6)
    assert "| CMExam Acc (" in (tmp_path / "o" / "table.md").read_text()


def test_original_and_harness_scoring_are_both_recorded(hf_model, tmp_path):
    res = {}
    for scoring in ("original", "harness"):
        r = _eval("mmlu", "--model", str(hf_model), "--data", str(SAMPLES / "mmlu"), "--out",
                  str(tmp_path / scoring), "--scoring", scoring, "--limit", "10")
        assert r.exit_code == 0, r.output
        res[scoring] = json.loads((tmp_path / scoring / "results.json").read_text())
        assert res[scoring]["scoring"] == scoring and res[scoring]["metrics"]["n"] == 20
    a = [json.loads(x)["extracted"] for x in (tmp_path / "original" / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(x)["extracted"] for x in (tmp_path / "harness" / "predictions.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 20 and all(x in ("A", "B", "C", "D") for x in a + b)  # every question answered
    for scoring, letters in (("original", a), ("harness", b)):
        gold = [json.loads(x)["gold"] for x in (tmp_path / scoring / "predictions.jsonl").read_text().splitlines()]
        assert res[scoring]["metrics"]["acc_micro"] == pytest.approx(100 * sum(map(str.__eq__, letters, gold)) / 20)


@pytest.mark.parametrize("task", ["cmexam", "mmlu"])
def test_device_dtype_and_auto_batch_are_taken_and_recorded(hf_model, tmp_path, task):
    """--device cpu --dtype fp32 --batch-size auto: the run places the model where asked, sizes the batch (on the
    CPU up to 16 questions per generate call and 8 prompts per forward, never more than there are questions) and
    records both in results.json."""
    data = SAMPLES / ("cmexam_test.csv" if task == "cmexam" else "mmlu")
    r = _eval(task, "--model", str(hf_model), "--data", str(data), "--out", str(tmp_path / task), "--limit", "2",
              "--device", "cpu", "--dtype", "fp32", "--batch-size", "auto",
              *(["--max-new-tokens", "4"] if task == "cmexam" else []))
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / task / "results.json").read_text())["config"]
    assert config["batch_size"] == 2 if task == "cmexam" else config["batch_sizes_used"] == [2]
    assert config["device"] == "cpu, fp32", config


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


def test_harness_scores_equal_a_direct_loglikelihood(hf_model):
    """The batched, left-padded scorer that shares rows between choices and keeps only the scored positions'
    logits gives the log-likelihood a single unpadded forward pass gives: one-token and several-token
    continuations, contexts of different lengths, with and without `logits_to_keep`."""
    import torch.nn.functional as F

    from medtrain.eval.choice import harness_pairs, score_harness
    from medtrain.eval.model import load_model

    model, tok, _ = load_model(hf_model)
    reqs = harness_pairs(tok, "Question: x\nAnswer:", [f" {x}" for x in "ABCD"])
    reqs += harness_pairs(tok, "一个更长一些的上下文，用来检查左侧填充。答案：", [" B"])
    reqs += harness_pairs(tok, "一个更长一些的上下文，", ["用来检查几个词的续写"])
    assert len(reqs[-1][1]) > 1
    for scored in (model, _NoLogitsToKeep(model)):
        batched = score_harness(scored, tok, reqs, batch_size=8, max_len=2048)
        for (ctx, cont), got in zip(reqs, batched, strict=True):
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = F.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
            want = sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))
            assert got == pytest.approx(want, abs=1e-4)


def test_report_merges_one_models_evals_into_one_row(hf_model, tmp_path):
    assert _eval("cmexam", "--model", str(hf_model), "--data", str(SAMPLES / "cmexam_test.csv"), "--out",
                 str(tmp_path / "evals" / "cmexam"), "--limit", "4", "--max-new-tokens", "4").exit_code == 0
    assert _eval("cmmlu", "--model", str(hf_model), "--data", str(SAMPLES / "cmmlu"), "--out",
                 str(tmp_path / "evals" / "cmmlu"), "--limit", "4").exit_code == 0
    r = CliRunner().invoke(app, ["report", str(tmp_path / "evals"), "--out", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "report" / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| {hf_model} |")]
    assert len(rows) == 1 and rows[0].count(" - ") == 0 and rows[0].count("|") == 5  # CMExam Acc, F1, CMMLU
    assert "CMMLU Acc (original scoring, 5-shot, " in text and "MMLU Acc (" not in text.replace("CMMLU", "")


# ----- placement: device, dtype, batch size ------------------------------------------------------------------


def test_auto_placement_on_the_cpu_keeps_fp32_and_refuses_what_cannot_run(hf_model, tmp_path):
    import json as _json
    import shutil

    from medtrain.eval.model import choose_placement, parse_batch_size
    from medtrain.eval.task import TaskError

    assert choose_placement(hf_model) == choose_placement(hf_model, "cpu", "auto")
    assert choose_placement(hf_model, "cpu", "bf16").dtype == "bf16"
    half = tmp_path / "half"
    shutil.copytree(hf_model, half)
    cfg = _json.loads((half / "config.json").read_text())
    cfg["dtype"] = "float16"
    (half / "config.json").write_text(_json.dumps(cfg))
    assert choose_placement(half, "cpu").dtype == "fp32"  # no fast half kernels on a CPU
    for bad in (("tpu", "auto"), ("cpu", "int8")):
        with pytest.raises(TaskError):
            choose_placement(hf_model, *bad)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(TaskError, match="no CUDA device"):
            choose_placement(hf_model, "cuda")
    assert parse_batch_size("auto") == "auto" and parse_batch_size("12") == 12
    with pytest.raises(TaskError, match="positive number or 'auto'"):
        parse_batch_size("0")


# ----- more eval on the model: shots, tasks, sweep cells ---------------------------------------------------

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


def test_more_shots_than_the_dev_split_holds_is_refused(hf_model, tmp_path):
    r = CliRunner().invoke(app, ["eval", "mmlu", "--model", str(hf_model), "--data", str(SAMPLES / "mmlu"),
                                 "--out", str(tmp_path / "o"), "--shots", "10", "--limit", "1"])
    assert r.exit_code == 2 and "--shots 10: the dev split has only" in r.output
    assert not (tmp_path / "o").exists()


def test_cmmlu_pointed_at_the_mmlu_folder_is_one_line(hf_model, tmp_path):
    r = CliRunner().invoke(app, ["eval", "cmmlu", "--model", str(hf_model), "--data", str(SAMPLES / "mmlu"),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "is this a cmmlu folder?" in r.output and r.exception.__class__ is SystemExit


# ----- tables that never mix conventions; sweep cells that never go stale ----------------------------------------


def test_a_sweep_eval_cell_reruns_when_its_settings_change_and_says_what_changed(hf_model, tmp_path, caplog):
    from medtrain.experiments import cells
    from medtrain.experiments.sweep import EvalData, evaluate

    data = EvalData(SAMPLES / "cmexam_test.csv", SAMPLES / "mmlu", SAMPLES / "cmmlu", limit=1, max_new_tokens=4)
    model_id = cells.model_identity(hf_model)
    first = evaluate(hf_model, model_id, tmp_path / "cell", data)
    again = evaluate(hf_model, model_id, tmp_path / "cell", data)
    assert [r["metrics"] for r in first] == [r["metrics"] for r in again]
    assert caplog.text.count("same settings, reusing") == 3
    caplog.clear()
    data.limit = 2
    changed = evaluate(hf_model, model_id, tmp_path / "cell", data)
    out = caplog.text
    assert out.count("made with other settings (eval.limit: 1 -> 2)") == 3
    assert changed[0]["metrics"]["n"] == 2 and changed[0]["data"]["limit"] == 2
