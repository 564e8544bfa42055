"""`medtrain contamination` end to end on prepared data: a real tokenizer, `prep huatuo` over a corpus with CMExam
and MMLU questions planted verbatim, edited and cut short, the CLI's outputs, the refusals, and `eval --exclude`
scoring the clean subset."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.eval.data import read_cmexam

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"
MMLU_FIRST = SAMPLES / "mmlu" / "test" / "clinical_knowledge_test.csv"


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _shown(question: str, options: dict[str, str]) -> str:
    return question.strip() + "\n" + "\n".join(f"{k}. {v}" for k, v in options.items())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tokenizer, a CMExam file with one short question added, and a prepared corpus holding planted copies:
    CMExam rows 3 and 10 verbatim, row 20 with one character changed, the short question, MMLU's first question;
    and the longest other question without its options (shared n-grams, not a copy)."""
    from medtrain.data_prep.pipeline import prep
    from medtrain.data_prep.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("contamination")
    cmexam = root / "cmexam.csv"
    text = (SAMPLES / "cmexam_test.csv").read_text(encoding="utf-8")
    cmexam.write_text(text + '诊断,"A 肺\nB 肝",A,,,,,,\n', encoding="utf-8")
    questions = read_cmexam(cmexam)
    short = len(questions) - 1
    plants = {3: _shown(questions[3].question, questions[3].options),
              10: _shown(questions[10].question, questions[10].options),
              20: _shown(questions[20].question, questions[20].options).replace("的", "之", 1),
              short: _shown(questions[short].question, questions[short].options)}
    mmlu = next(csv.reader([MMLU_FIRST.read_text(encoding="utf-8").splitlines()[0]]))
    mmlu_text = _shown(mmlu[0], dict(zip("ABCD", mmlu[1:5], strict=True)))
    near = max((i for i in range(len(questions)) if i not in (3, 10, 20)), key=lambda i: len(questions[i].question))
    near_miss = questions[near].question + "，这一问题在临床上还有许多其他的讨论和不同看法。"
    docs = [json.loads(line) for line in (SAMPLES / "huatuo_sample.jsonl").read_text().splitlines()]
    for k, body in enumerate([*plants.values(), mmlu_text, near_miss]):
        docs.insert(20 * (k + 1), {"questions": [["病例讨论"]], "answers": [f"以下为一道题目：\n{body}\n请思考。"]})
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    texts = [p.read_text(encoding="utf-8") for p in SAMPLES.rglob("*.csv")] + [corpus.read_text(encoding="utf-8")]
    tok = train_bpe_tokenizer(texts, root / "tok", vocab_size=800)
    prep("huatuo", [corpus], tok, root / "corpus", seq_len=256, workers=1)
    return {"root": root, "tok": tok, "cmexam": cmexam, "corpus": root / "corpus", "planted": set(plants),
            "short": short, "questions": questions, "near": near}


@pytest.fixture(scope="module")
def checked(world):
    out = world["root"] / "check"
    r = _cli("contamination", "--train", world["corpus"], "--eval", f"cmexam={world['cmexam']}",
             "--eval", f"mmlu={SAMPLES / 'mmlu'}", "--out", out, "--workers", 2)
    assert r.exit_code == 0, r.output
    return out, r.output


def test_planted_questions_are_flagged_and_nothing_else(world, checked):
    out, output = checked
    lines = [json.loads(x) for x in (out / "contaminated.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {x["index"] for x in lines if x["task"] == "cmexam"} == world["planted"]
    assert [(x["index"], x["id"]) for x in lines if x["task"] == "mmlu"] == [(0, "clinical_knowledge/0")]
    by_index = {x["index"]: x for x in lines if x["task"] == "cmexam"}
    assert by_index[3]["ratio"] == 1.0 and by_index[10]["ratio"] == 1.0
    assert 0.8 <= by_index[20]["ratio"] < 1.0  # the edited copy: near, not equal
    assert "之常用" in by_index[20]["train_text"]
    assert by_index[world["short"]]["ratio"] == 1.0  # shorter than 13 tokens: compared whole
    for x in lines:
        assert x["train_dataset"] == str(world["corpus"])
        a, b = x["span"]
        assert 0 <= a < b and x["shared_ngrams"] >= 1
    summary = json.loads((out / "summary.json").read_text())
    n_cmexam = len(world["questions"])
    assert summary["tasks"]["cmexam"] | {"data": None, "sha256": None} == {
        "data": None, "sha256": None, "checked": n_cmexam, "flagged": 4, "share": 4 / n_cmexam}
    assert summary["tasks"]["mmlu"]["flagged"] == 1
    assert (summary["ngram"], summary["min_ratio"]) == (13, 0.8)
    assert summary["scan"]["tokens_scanned"] == summary["train"][0]["num_tokens"]
    assert "cmexam" in output and "flagged" in output and "tokens/s" in output
    assert "1 shorter than 13 tokens" in output


def test_the_near_miss_is_a_candidate_that_the_ratio_turns_down(world, tmp_path):
    r = _cli("contamination", "--train", world["corpus"], "--eval", f"cmexam={world['cmexam']}", "--out",
             tmp_path / "low", "--min-ratio", "0.05", "--workers", 1)
    assert r.exit_code == 0, r.output
    ratios = {x["index"]: x["ratio"] for x in map(json.loads, (tmp_path / "low" / "contaminated.jsonl").read_text(
        encoding="utf-8").splitlines())}
    assert world["planted"] | {world["near"]} <= set(ratios)
    assert ratios[world["near"]] < 0.8 and all(ratios[i] >= 0.8 for i in world["planted"])


def test_datasets_of_two_tokenizers_are_refused(world, tmp_path):
    from medtrain.data_prep.pipeline import prep
    from medtrain.data_prep.tokenizer import train_bpe_tokenizer

    other = train_bpe_tokenizer([(SAMPLES / "huatuo_sample.jsonl").read_text()], tmp_path / "tok2", vocab_size=500)
    prep("huatuo", [SAMPLES / "huatuo_sample.jsonl"], other, tmp_path / "other", seq_len=256, workers=1)
    r = _cli("contamination", "--train", world["corpus"], "--train", tmp_path / "other", "--eval",
             f"cmexam={world['cmexam']}", "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert "one check reads one tokenization" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_bad_eval_spec_is_one_line(world, tmp_path):
    r = _cli("contamination", "--train", world["corpus"], "--eval", "usmle=x.csv", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "not one of cmexam, mmlu" in r.output


def test_exclude_scores_the_clean_subset_and_records_it(world, checked, tmp_path):
    out, _ = checked
    questions = world["questions"]
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps({"id": q.id, "output": f"答案: {q.answer}"}) + "\n"
                                   for q in questions), encoding="utf-8")
    full = _cli("eval", "cmexam", "--data", world["cmexam"], "--predictions", predictions, "--out", tmp_path / "full")
    clean = _cli("eval", "cmexam", "--data", world["cmexam"], "--predictions", predictions, "--out",
                 tmp_path / "clean", "--exclude", out / "contaminated.jsonl")
    assert full.exit_code == 0 and clean.exit_code == 0, clean.output
    a = json.loads((tmp_path / "full" / "results.json").read_text())
    b = json.loads((tmp_path / "clean" / "results.json").read_text())
    assert (a["metrics"]["n"], b["metrics"]["n"]) == (len(questions), len(questions) - 4)
    assert "excluded" not in a
    assert b["excluded"]["questions"] == 4 and b["excluded"]["file"] == str(out / "contaminated.jsonl")
    assert sorted(b["excluded"]["ids"]) == sorted(str(i) for i in world["planted"])
    assert len(b["excluded"]["sha256"]) == 64
    assert "4 left out by --exclude" in clean.output

    from medtrain.eval.tables import results_table

    header = results_table([a, b]).splitlines()[0]
    assert "contaminated left out" in header and header.count("CMExam Acc") == 2

    from medtrain.eval.clean import clean_results  # the sweep's clean subset, scored from the full run's outputs

    rescored = clean_results(tmp_path / "full", out / "contaminated.jsonl", tmp_path / "rescored")
    assert rescored["metrics"] == b["metrics"] and rescored["excluded"]["ids"] == b["excluded"]["ids"]
    assert json.loads((tmp_path / "rescored" / "results.json").read_text())["scored_from"] == str(tmp_path / "full")


def test_exclude_from_other_data_is_refused(world, checked, tmp_path):
    out, _ = checked
    other = tmp_path / "other.csv"
    lines = world["cmexam"].read_text(encoding="utf-8").splitlines(keepends=True)
    other.write_text("".join(lines[:4]), encoding="utf-8")  # the header and a few rows only
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": "0", "output": "A"}\n')
    r = _cli("eval", "cmexam", "--data", other, "--predictions", predictions, "--out", tmp_path / "o", "--exclude",
             out / "contaminated.jsonl")
    assert r.exit_code == 2 and "is not in" in r.output and "contaminated.jsonl:1" in r.output


def test_exclude_on_multiple_choice_leaves_the_question_out(world, checked, hf_model, tmp_path):
    from medtrain.eval.run import run_task

    out, _ = checked
    kwargs = {"model_dir": hf_model, "data": SAMPLES / "mmlu", "shots": 0, "subjects": ["clinical_knowledge"],
              "device": "cpu", "dtype": "fp32"}
    full = run_task("mmlu", tmp_path / "full", **kwargs)
    clean = run_task("mmlu", tmp_path / "clean", exclude=out / "contaminated.jsonl", **kwargs)
    assert clean["metrics"]["n"] == full["metrics"]["n"] - 1
    assert clean["excluded"]["ids"] == ["clinical_knowledge/0"]
    kept = {p["id"] for p in map(json.loads, (tmp_path / "clean" / "predictions.jsonl").read_text().splitlines())}
    assert "clinical_knowledge/0" not in kept

    from medtrain.eval.clean import clean_results

    rescored = clean_results(tmp_path / "full", out / "contaminated.jsonl", tmp_path / "rescored")
    assert rescored["metrics"] == clean["metrics"]
