"""Eval without a model: the paper's extraction rules, CMExam's metrics against scikit-learn and a transcription
of CMExam's evaluation, the real benchmark files' parsing, bad inputs, and the sweep's refusals and tables."""

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import shared_data
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.eval.data import read_cmexam, read_mc_subject
from medtrain.eval.extract import NO_ANSWER, extract
from medtrain.eval.metrics import weighted_f1
from medtrain.eval.run import build_prompt, mc_subjects
from medtrain.eval.task import load_task

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"
OPTS = {"A": "原发病", "B": "出血部位", "C": "出血量", "D": "在胃内停留时间", "E": "以上均非"}


# ----- extraction -----------------------------------------------------------------------------------------


def test_hard_match_reads_the_taught_answer_line():
    assert extract("答案: C\n解释: 出血量决定", OPTS, "hard").answer == "C"
    assert extract("答案：B、A", OPTS, "hard").answer == "AB"  # letter sets, in option order


def test_hard_match_without_the_answer_line_is_no_answer():
    e = extract("我认为是出血量", OPTS, "hard")
    assert (e.answer, e.rule) == (NO_ANSWER, "hard:none")


@pytest.mark.parametrize("output", ["", "   \n  "])
def test_empty_output_is_no_answer_in_every_mode(output):
    for mode in ("hard", "paper", "cmexam"):
        assert extract(output, OPTS, mode).answer == NO_ANSWER


def test_paper_rule_1_direct_letter_match():
    e = extract("正确答案是 D 。", OPTS, "paper")
    assert (e.answer, e.rule) == ("D", "paper:letters")


def test_paper_rule_2_option_text_case_insensitive():
    e = extract("the answer is ventricular FIBRILLATION", {"A": "asystole", "B": "ventricular fibrillation"},
                "paper")
    assert (e.answer, e.rule) == ("B", "paper:text")


def test_paper_rule_3_falls_back_to_levenshtein_on_the_first_line():
    e = extract("出血的量\n其他内容", OPTS, "paper")
    assert (e.answer, e.rule) == ("C", "paper:levenshtein")


def test_cmexam_parser_takes_every_option_mentioned_and_first_line_when_explained():
    assert extract("B 出血部位 和 出血量", OPTS, "cmexam").answer == "BC"
    assert extract("出血量\n解释: 原发病不是主因", OPTS, "cmexam").answer == "C"


# ----- metrics --------------------------------------------------------------------------------------------


def test_weighted_f1_equals_scikit_learn_on_random_cases():
    from sklearn.metrics import precision_recall_fscore_support

    rng = random.Random(0)
    labels = ["A", "B", "C", "D", "E", "AB", "ACD", NO_ANSWER]
    for _ in range(300):
        n = rng.randint(1, 60)
        gold = [rng.choice(labels[:-1]) for _ in range(n)]
        pred = [rng.choice(labels) if rng.random() < 0.6 else g for g in gold]
        _, _, f1, _ = precision_recall_fscore_support(gold, pred, average="weighted", zero_division=0)
        assert weighted_f1(gold, pred) == pytest.approx(f1, abs=1e-12)


def cmexam_reference_metrics(gold: list[str], pred: list[str]) -> tuple[float, float]:
    """Transcription of CMExam's published evaluation: exact string match for accuracy; scikit-learn's
    precision_recall_fscore_support(average="weighted") for F1; unparsed outputs are the class 无答案."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    pred = [p if p else "无答案" for p in pred]
    _, _, f1, _ = precision_recall_fscore_support(gold, pred, average="weighted")
    return accuracy_score(gold, pred), f1


def test_scoring_a_predictions_file_matches_cmexams_reference_on_the_real_val_split(tmp_path):
    val = shared_data("cmexam", "val.csv")
    questions = read_cmexam(val)
    assert len(questions) == 6811
    rng = random.Random(1)
    lines, gold, pred = [], [], []
    for q in questions:
        r = rng.random()
        if r < 0.5:
            out, p = f"答案: {q.answer}\n解释: ...", q.answer
        elif r < 0.9:
            wrong = rng.choice([k for k in q.options if k != q.answer[:1]] or ["A"])
            out, p = f"答案: {wrong}", wrong
        else:
            out, p = "我不知道", ""
        lines.append(json.dumps({"id": q.row, "output": out}, ensure_ascii=False))
        gold.append(q.answer or "无答案")
        pred.append(p)
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(app, ["eval", "cmexam", "--data", str(val), "--predictions", str(preds), "--template",
                                 "cmexam_with_reasoning", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    acc, f1 = cmexam_reference_metrics(gold, pred)
    assert res["metrics"]["acc"] == pytest.approx(100 * acc, abs=1e-9)
    assert res["metrics"]["weighted_f1"] == pytest.approx(100 * f1, abs=1e-9)
    assert res["metrics"]["no_answer"] == pred.count("")
    assert res["extract"] == "hard" and res["data"]["sha256"]


def test_breakdowns_follow_the_annotation_columns(tmp_path):
    qs = read_cmexam(SAMPLES / "cmexam_test.csv")
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": q.row, "output": f"答案: {q.answer}"}) + "\n" for q in qs))
    r = CliRunner().invoke(app, ["eval", "cmexam", "--data", str(SAMPLES / "cmexam_test.csv"), "--predictions",
                                 str(preds), "--template", "cmexam_answer_only", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["metrics"]["acc"] == 100.0 and res["metrics"]["weighted_f1"] == 100.0
    assert set(res["metrics"]["by"]) == {"Disease Group", "Clinical Department", "Area of Competency",
                                         "Difficulty level"}


# ----- real benchmark files --------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "n_subjects", "n_test", "n_dev"), [("mmlu", 57, 14079, 285),
                                                                      ("cmmlu", 67, 11582, 335)])
def test_every_subject_of_the_real_files_parses_and_prompts(task, n_subjects, n_test, n_dev):
    root = shared_data(task)
    spec = load_task(task)
    subjects = mc_subjects(spec, root)
    assert len(subjects) == n_subjects
    total_test = total_dev = 0
    for s in subjects:
        dev, test = read_mc_subject(spec, root, s, "dev"), read_mc_subject(spec, root, s, "test")
        total_dev, total_test = total_dev + len(dev), total_test + len(test)
        assert all(q.answer in "ABCD" and len(q.options) == 4 for q in dev + test)
        prompt = build_prompt(spec, spec.original, s, dev[:5], test[0])
        if task == "mmlu":
            assert prompt.startswith(f"The following are multiple choice questions (with answers) about "
                                     f"{s.replace('_', ' ')}.\n\n") and prompt.endswith("\nAnswer:")
            assert prompt.count("\nAnswer: ") == 5
        else:
            header = f"以下是关于{spec.subject_names[s]}的单项选择题，请直接给出正确答案的选项。\n\n"
            assert prompt.startswith(header)
            assert prompt.endswith("\n答案是：") and prompt.count("题目：") == 6
    assert (total_test, total_dev) == (n_test, n_dev)


# ----- bad input ----------------------------------------------------------------------------------------------


def _eval(*args):
    return CliRunner().invoke(app, ["eval", *args])


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    r = _eval("cmexam", "--model", str(tmp_path), "--data", str(SAMPLES / "cmexam_test.csv"), "--out", str(out))
    assert r.exit_code == 2 and "not a Hugging Face model directory" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Answer\nq,A\n")
    r = _eval("cmexam", "--predictions", str(bad), "--data", str(bad), "--out", str(out))
    assert r.exit_code == 2 and "missing column(s) Options" in r.output
    bad.write_text('Question,Options,Answer\nq,"A 甲\n乙",A\n')
    r = _eval("cmexam", "--predictions", str(bad), "--data", str(bad), "--out", str(out))
    assert r.exit_code == 2 and "has no letter" in r.output
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 999999, "output": "答案: A"}\n')
    r = _eval("cmexam", "--predictions", str(preds), "--data", str(SAMPLES / "cmexam_test.csv"), "--out", str(out))
    assert r.exit_code == 2 and "id '999999' is not a question" in r.output
    assert not out.exists()


# ----- placement: device, dtype, batch size ------------------------------------------------------------------


def test_kv_cache_per_token_is_2_x_layers_x_hidden_x_bytes_for_llama2_13b():
    from transformers import LlamaConfig, LlamaForCausalLM

    from medtrain.core.model_specs import NAMED
    from medtrain.eval.model import generation_row_bytes, kv_bytes_per_token

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**NAMED["llama2-13b"].to_hf_config())).to(torch.float16)
    assert kv_bytes_per_token(model) == 2 * 40 * 5120 * 2  # 0.78 MiB per token in fp16
    # a CMExam question: ~300 prompt tokens + 256 generated, and one row of fp32 logits being decoded
    assert generation_row_bytes(model, 300, 256) == 2 * 40 * 5120 * 2 * 556 + 2 * 4 * 32000


SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


@pytest.mark.parametrize("style", ["答案是{a}和{b}", "{a}、{b}", "选{a}, {b}", "{a}/{b}", "{a} and {b}", "{a}{b}",
                                   "{a}与{b}", "答案: {a}，{b}\n解释: 其余选项错误"])
def test_multi_answer_outputs_give_every_letter_on_cmexams_multi_answer_questions(style):
    """The paper's first rule on the real val split's 210 multi-answer questions, in many writing styles."""
    questions = [q for q in read_cmexam(shared_data("cmexam", "val.csv")) if len(q.answer) > 1]
    assert len(questions) > 100
    for q in questions:
        head, tail = q.answer[:-1], q.answer[-1]
        output = style.format(a="、".join(head) if "、" not in style else "".join(head), b=tail)
        got = extract(output, q.options, "paper")
        assert (got.answer, got.rule) == (q.answer, "paper:letters"), (output, q.answer)


def _sweep_before_any_work(tmp_path, steps: str):
    """The sweep over a hand-made continual run whose checkpoints are checked before the first cell."""
    (tmp_path / "continual" / "recipe.yaml").write_text((Path("recipes/tiny/continual.yaml")).read_text())
    r = CliRunner().invoke(app, ["sweep", "--continual", str(tmp_path / "continual"), "--sft-recipe",
                                 "recipes/tiny/sft.yaml", "--checkpoints", steps, "--hosts", "hostfiles/localhost",
                                 "--out", str(tmp_path / "sweep"), "--cmexam-data", str(SAMPLES / "cmexam_test.csv"),
                                 "--mmlu-data", str(SAMPLES / "mmlu"), "--cmmlu-data", str(SAMPLES / "cmmlu")])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "sweep").exists()
    return r.output.replace("\n", "")


def test_sweep_refuses_missing_checkpoints_before_any_work(tmp_path):
    ckpt = tmp_path / "continual" / "checkpoints" / "step_000004"
    ckpt.mkdir(parents=True)
    (ckpt / "COMPLETE").write_text("4\n")
    assert "no complete checkpoint for step(s) 8, 12; the run has 4" in _sweep_before_any_work(tmp_path, "4,8,12")


def test_sweep_refuses_a_damaged_checkpoint_before_any_work(tmp_path):
    ckpt = tmp_path / "continual" / "checkpoints" / "step_000004"
    ckpt.mkdir(parents=True)
    (ckpt / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x" * 10)
    (ckpt / "manifest.json").write_text(json.dumps({"files": {"zero_pp_rank_0_mp_rank_00_optim_states.pt": {
        "size": 4096, "crc32": "00000000", "rank": 0}}}))
    (ckpt / "COMPLETE").write_text("4\n")
    assert ("step_000004 is damaged: zero_pp_rank_0_mp_rank_00_optim_states.pt is 10 bytes, 4,096 were written"
            in _sweep_before_any_work(tmp_path, "4"))


# ----- tables that never mix conventions; sweep cells that never go stale ----------------------------------------


def _result(task, model, acc, **kw):
    base = {"task": task, "model": model, "data": {"sha256": "d" * 64}, "metrics": {"acc": acc, "n": 100}}
    if task == "cmexam":
        base.update({"extract": "paper"})
        base["metrics"]["weighted_f1"] = acc / 2
    else:
        base.update({"scoring": "original", "shots": 5})
    for k, v in kw.items():
        if k == "n":
            base["metrics"]["n"] = v
        else:
            base[k] = v
    return base


def test_results_in_other_conventions_are_other_labelled_columns_whatever_the_order():
    from medtrain.eval.tables import results_table

    a = _result("mmlu", "m", 29.82, scoring="original")
    b = _result("mmlu", "m", 27.19, scoring="harness")
    c = _result("cmexam", "m", 40.0, extract="hard")
    d = _result("cmexam", "m", 30.0, extract="paper", n=10)
    one, two = results_table([a, b, c, d]), results_table([d, c, b, a])
    header = one.splitlines()[0]
    for label in ("MMLU Acc (original scoring, 5-shot, 100 q)", "MMLU Acc (harness scoring, 5-shot, 100 q)",
                  "CMExam Acc (hard extraction, 100 q)", "CMExam Acc (paper extraction, 10 q)"):
        assert label in header
    assert "29.82" in one and "27.19" in one and set(one.splitlines()[2].split("|")) == set(
        two.splitlines()[2].split("|"))
    e = _result("mmlu", "m2", 25.0, data={"sha256": "e" * 64})
    assert "data " in results_table([a, e]).splitlines()[0]  # same convention, other files: told apart


def test_table3_says_the_extraction_and_convention_behind_each_row():
    from medtrain.experiments.paper import table3

    rows = [{"step": 0, "sft": False, "model": "base", "results": [_result("cmexam", "base", 20.0),
                                                                    _result("mmlu", "base", 30.0)]},
            {"step": 0, "sft": True, "model": "sft", "results": [_result("cmexam", "sft", 50.0, extract="hard")]}]
    text = table3(rows)
    assert "CMExam: paper extraction, 100 q; MMLU: original scoring, 5-shot, 100 q" in text
    assert "CMExam: hard extraction, 100 q" in text
