"""The eval commands as library functions: run a task, score, and write results.json, predictions.jsonl and a
markdown table into an output directory (written beside it and renamed into place).

eval.model and eval.generate are imported inside the functions that load a model, on purpose: they bring
transformers, which scoring a predictions file does not need."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from medtrain.core import __version__ as MEDTRAIN_VERSION
from medtrain.core.digest import sha256_file
from medtrain.core.log import get_logger
from medtrain.core.publish import staged_dir
from medtrain.core.templates import get_template
from medtrain.eval.choice import adds_bos, harness_pairs, score_harness, score_original
from medtrain.eval.data import Question, keyed_lines, mc_subjects, read_cmexam, read_mc_subject
from medtrain.eval.encoding import encode
from medtrain.eval.exclude import Exclusion, load_exclusion
from medtrain.eval.extract import extract
from medtrain.eval.metrics import accuracy, breakdown, mean, score
from medtrain.eval.settings import DEFAULT_SCORING, DEFAULT_SHOTS, generate_settings, model_lineage
from medtrain.eval.shard import ONE, Shard
from medtrain.eval.tables import results_table
from medtrain.eval.task import GenerateTask, MultipleChoiceTask, PromptStyle, TaskError, load_task

log = get_logger(__name__)


def write_outputs(out: Path, results: dict, predictions: list[dict]) -> Path:
    with staged_dir(out, kind="eval") as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as f:
            for p in predictions:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        (tmp / "table.md").write_text(results_table([results]), encoding="utf-8")
    return out


# ----- CMExam ----------------------------------------------------------------------------------------------


def read_predictions(path: Path, questions: list[Question], skip: frozenset[str] = frozenset()) -> list[str]:
    """Raw outputs in question order; ids are 0-based rows or the data's id column, and must match exactly
    (those in `skip`, left out by --exclude, are passed over)."""
    by_id = {q.id: k for k, q in enumerate(questions)}
    outputs: list[str | None] = [None] * len(questions)
    for lineno, (key, text) in keyed_lines(path, ("id", "output"), '{"id": ..., "output": "..."}'):
        key = str(key)
        if key in skip:
            continue
        if key not in by_id:
            raise TaskError(f"{path}:{lineno}: id {key!r} is not a question of the data file (ids are 0-based "
                            "rows, or the data's id column)")
        if outputs[by_id[key]] is not None:
            raise TaskError(f"{path}:{lineno}: id {key!r} appears twice")
        outputs[by_id[key]] = text if isinstance(text, str) else ""
    missing = [questions[k].id for k, o in enumerate(outputs) if o is None]
    if missing:
        raise TaskError(f"{path}: {len(missing)} of {len(questions)} questions have no prediction (first id "
                        f"{missing[0]!r}); score a matching data file or use --limit")
    return outputs  # type: ignore[return-value]


PATH_ARGS = ("data", "model_dir", "predictions", "exclude")


def excluded(exclusion: Exclusion | None) -> dict:
    """What results.json says about --exclude: nothing without it (the full benchmark), else the file, its digest
    and the questions left out."""
    return {"excluded": exclusion.record()} if exclusion else {}


def run_task(name: str, out: Path, *, shard: Shard = ONE, **kwargs) -> dict:
    """The one entry of every evaluation: the CLI, the sweep and the sharded ranks all call it with a task's
    name; the task file's `output` picks the runner (free generation or likelihood multiple choice), so a new
    task of either shape is a YAML file, not code."""
    task = load_task(name)
    kwargs = {k: Path(v) if k in PATH_ARGS and v is not None else v for k, v in kwargs.items()}
    if isinstance(task, GenerateTask):
        return run_generate(name, kwargs.pop("data"), Path(out), shard=shard, **kwargs)
    return run_mc(name, kwargs.pop("model_dir"), kwargs.pop("data"), Path(out), shard=shard, **kwargs)


def _generate_outputs(model_dir: Path, prompts: list[str], batch_size: int | str, max_new: int, device: str,
                      dtype: str, shard: Shard) -> tuple[list[str], int, object]:
    """Greedy outputs of the model for every prompt (this rank's batches), the batch size used and where the
    model was placed."""
    from medtrain.eval.generate import encode_prompts, generate
    from medtrain.eval.model import auto_batch_size, generation_row_bytes, load_model, parse_batch_size

    batch_size = parse_batch_size(batch_size)
    model, tok, placement = load_model(model_dir, device=device, dtype=dtype)
    if batch_size == "auto":
        longest = max((len(x) for x in encode_prompts(tok, prompts)), default=1)
        batch_size, why = auto_batch_size(model, generation_row_bytes(model, longest, max_new), len(prompts), 16)
        batch_size = shard.smallest(batch_size)
        if shard.is_main:
            log.info(f"batch size auto: {why}")
    return generate(model, tok, prompts, batch_size=batch_size, max_new_tokens=max_new, shard=shard), batch_size, \
        placement


def _generate_metrics(task: GenerateTask, questions: list, gold: list[str], extracted: list) -> dict:
    """Accuracy and F1 as the task names them, the no-answer count, which extraction rules fired, and the
    breakdowns by the annotation columns the data has."""
    pred = [e.answer for e in extracted]
    metrics = {**score(task.metrics, gold, pred), "n": len(questions), "no_answer": pred.count(task.no_answer),
               "gold_missing": sum(1 for q in questions if not q.answer),
               "rules": dict(sorted(Counter(e.rule for e in extracted).items()))}
    for column in task.breakdowns:
        if questions and column in questions[0].meta:
            metrics.setdefault("by", {})[column] = breakdown(gold, pred, [q.meta[column] for q in questions])
    return metrics


def run_generate(task_name: str, data: Path, out: Path, *, model_dir: Path | None = None,
                 model_source: dict | None = None, predictions: Path | None = None, template: str | None = None,
                 extract_mode: str | None = None, batch_size: int | str = 16, max_new_tokens: int | None = None,
                 limit: int | None = None, device: str = "auto", dtype: str = "auto", exclude: Path | None = None,
                 shard: Shard = ONE) -> dict:
    task = load_task(task_name)
    if not isinstance(task, GenerateTask):
        raise TaskError(f"task {task_name} declares output {task.output}; run_generate runs generate tasks")
    exclusion = load_exclusion(exclude, task.task)
    questions = read_cmexam(data)
    if exclusion:
        exclusion.check_all_found({q.id for q in questions}, data)
    questions = questions[:limit or None]
    if exclusion:  # the clean part of the questions the run would score without it
        questions = exclusion.keep(questions)
    if (model_dir is None) == (predictions is None):
        raise TaskError("give exactly one of --model (generate) or --predictions (score given outputs)")
    settings = generate_settings(task, model_dir, template, extract_mode, max_new_tokens)
    tpl, mode, max_new = get_template(settings.template), settings.extract, settings.max_new_tokens
    prompts = [tpl.prompt(q.question, q.options) for q in questions]
    start = time.perf_counter()
    placement = None
    if predictions is not None:
        outputs = read_predictions(predictions, questions, frozenset(exclusion.lines) if exclusion else frozenset())
    else:
        outputs, batch_size, placement = _generate_outputs(model_dir, prompts, batch_size, max_new, device, dtype,
                                                           shard)
    seconds = time.perf_counter() - start
    extracted = [extract(o, q.options, mode, task.no_answer) for o, q in zip(outputs, questions, strict=True)]
    gold = [q.answer or task.no_answer for q in questions]
    metrics = _generate_metrics(task, questions, gold, extracted)
    results = {
        "task": task.task, "task_version": task.version, "template": tpl.describe(), "extract": mode,
        "model": str(model_dir) if model_dir else None, "model_source": model_source,
        "predictions_file": str(predictions) if predictions else None, "lineage": model_lineage(model_dir),
        "data": {"path": str(data), "sha256": sha256_file(data), "limit": limit},
        "config": {"batch_size": batch_size, "max_new_tokens": max_new, "do_sample": task.generation.do_sample,
                   "device": placement.describe() if placement else None, "ranks": shard.world},
        "metrics": metrics, "seconds": seconds, "medtrain_version": MEDTRAIN_VERSION,
        **excluded(exclusion),
    }
    preds = [{"id": q.id, "prompt": p, "output": o, "extracted": e.answer, "rule": e.rule, "gold": g,
              "correct": e.answer == g} for q, p, o, e, g in zip(questions, prompts, outputs, extracted, gold,
                                                                 strict=True)]
    if shard.is_main:
        write_outputs(out, results, preds)
    return results


# ----- MMLU / CMMLU ------------------------------------------------------------------------------------------


def build_prompt(task: MultipleChoiceTask, style: PromptStyle, subject: str, shots: list[Question],
                 q: Question) -> str:
    text = style.header.format(subject=task.subject_name(subject))

    def question(x: Question) -> str:
        stem = x.question.strip() if style.strip_question else x.question
        block = "\n".join(f"{k}. {v}" for k, v in x.options.items())  # {options}: any number of them
        return style.question.format(question=stem, options=block, **x.options)

    for s in shots:
        text += question(s) + style.shot_answer.format(answer=s.answer)
    return text + question(q)


def run_mc(task_name: str, model_dir: Path, data: Path, out: Path, *, model_source: dict | None = None,
           shots: int = DEFAULT_SHOTS, scoring: str = DEFAULT_SCORING,
           batch_size: int | str = 8, limit: int | None = None, subjects: list[str] | None = None,
           device: str = "auto", dtype: str = "auto", answer_index: int | None = None, exclude: Path | None = None,
           shard: Shard = ONE) -> dict:
    """Multiple choice in four parts: prompts per question (build_prompt), their scores under one convention
    (score_choices), the metrics (aggregate_mc), and the outputs (write_outputs)."""
    if scoring not in ("original", "harness"):
        raise TaskError(f"--scoring {scoring} is not one of original, harness")
    task = load_task(task_name)
    if not isinstance(task, MultipleChoiceTask):
        raise TaskError(f"task {task_name} declares output {task.output}; run_mc runs multiple_choice tasks")
    chosen, devs = mc_inputs(task, data, subjects, shots, answer_index)
    tests = {s: read_mc_subject(task, data, s, "test", answer_index) for s in chosen}
    exclusion = load_exclusion(exclude, task_name)
    if exclusion and not subjects:  # before a model is loaded: the file must be this data's
        exclusion.check_all_found({q.id for qs in tests.values() for q in qs}, data)
    from medtrain.eval.model import context_length, load_model, parse_batch_size

    batch_size = parse_batch_size(batch_size)
    model, tok, placement = load_model(model_dir, device=device, dtype=dtype)
    max_len = context_length(model)
    style = task.style(scoring)
    start = time.perf_counter()
    preds, truncated, used = [], 0, set()
    bar = tqdm(chosen, unit="subject", desc=f"{task_name} {shots}-shot", file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, disable=not shard.is_main)
    for subject in bar:
        test = tests[subject][:limit or None]
        test = exclusion.keep(test) if exclusion else test
        prompts = [build_prompt(task, style, subject, devs[subject][:shots], q) for q in test]
        letters = [tuple(q.options) for q in test]  # four for MMLU, four or five for MedQA
        scores, cut, batch = score_choices(model, tok, style, scoring, prompts, letters, batch_size, max_len,
                                           shard)
        truncated, used = truncated + cut, used | {batch}
        for q, p, s, ls in zip(test, prompts, scores, letters, strict=True):
            choice = ls[max(range(len(ls)), key=lambda k: s[k])]
            preds.append({"id": q.id, "subject": subject, "prompt": p, "scores": s, "extracted": choice,
                          "rule": scoring, "gold": q.answer, "correct": choice == q.answer})
        bar.set_postfix_str(f"{len(preds) / (time.perf_counter() - start):.1f} q/s", refresh=False)
    bar.close()
    results = {"task": task_name, "task_version": task.version, "scoring": scoring, "shots": shots,
               "model": str(model_dir), "model_source": model_source, "lineage": model_lineage(model_dir),
               "data": {"path": str(data), "subjects": len(chosen), "limit": limit, "answer_index": answer_index,
                        "only": sorted(chosen) if subjects else None,
                        "sha256": {s: sha256_file(Path(data) / task.layout.test.format(subject=s))
                                   for s in chosen}},
               "config": {"batch_size": batch_size, "batch_sizes_used": sorted(used), "context": max_len,
                          "bos": adds_bos(tok),
                          "device": placement.describe(), "ranks": shard.world},
               "metrics": aggregate_mc(task, preds, chosen, truncated),
               "seconds": time.perf_counter() - start, "medtrain_version": MEDTRAIN_VERSION,
               **excluded(exclusion)}
    if shard.is_main:
        write_outputs(out, results, preds)
    return results


def mc_inputs(task: MultipleChoiceTask, data: Path, subjects: list[str] | None, shots: int,
              answer_index: int | None = None) -> tuple[list[str], dict[str, list[Question]]]:
    """The subjects to run and their few-shot examples, checked before any model is loaded."""
    all_subjects = mc_subjects(task, data)
    chosen = subjects or all_subjects
    unknown = sorted(set(chosen) - set(all_subjects))
    if unknown:
        raise TaskError(f"{data}: no subject(s) {', '.join(unknown)} (there are {len(all_subjects)}, e.g. "
                        f"{', '.join(all_subjects[:3])}; a subject is a test file's stem)")
    devs = {s: read_mc_subject(task, data, s, "dev", answer_index) for s in chosen}
    short = sorted(s for s, d in devs.items() if len(d) < shots)
    if short:
        raise TaskError(f"--shots {shots}: the dev split has only {len(devs[short[0]])} examples for {short[0]}"
                        f"{f' (and {len(short) - 1} more subjects)' if len(short) > 1 else ''}; use --shots "
                        f"{min(len(d) for d in devs.values())} or fewer")
    return chosen, devs


def score_choices(model, tok, style: PromptStyle, scoring: str, prompts: list[str], letters: list[tuple[str, ...]],
                  batch_size: int | str, max_len: int, shard: Shard) -> tuple[list[list[float]], int, int]:
    """(per question, one score per option; prompts cut to the context; the batch size used) under one
    convention: original, the letters' logits after the prompt; harness, each continuation's log-likelihood
    (lm-eval's requests)."""
    from medtrain.eval.model import auto_batch_size, scoring_row_bytes

    if scoring == "original":
        contexts = [encode(tok, p) for p in prompts]
    else:
        per_question = [harness_pairs(tok, p, [style.continuation.format(letter=x) for x in ls])
                        for p, ls in zip(prompts, letters, strict=True)]
        requests = [pair for pairs in per_question for pair in pairs]
        contexts = [pairs[0][0] for pairs in per_question]
    batch = batch_size
    if batch == "auto":  # per subject: its longest prompt sets the memory of a row
        longest = max((len(c) + 2 for c in contexts), default=1)
        batch, _ = auto_batch_size(model, scoring_row_bytes(model, min(longest, max_len + 1)), len(prompts), 8)
        batch = shard.smallest(batch)
    if scoring == "original":
        cut = sum(len(c) > max_len for c in contexts)
        return score_original(model, tok, [c[-max_len:] for c in contexts], batch, shard, letters), cut, batch
    cut = sum(len(c) + len(x) > max_len + 1 for c, x in (pairs[0] for pairs in per_question))
    flat = iter(score_harness(model, tok, requests, batch, max_len, shard))
    return [[next(flat) for _ in ls] for ls in letters], cut, batch


def aggregate_mc(task: MultipleChoiceTask, preds: list[dict], chosen: list[str], truncated: int) -> dict:
    """Accuracy pooled (micro) and averaged over subjects (macro), by subject and category; the task says
    which one is its headline."""
    def acc(rows: list[dict]) -> dict:
        return {"n": len(rows), "acc": 100 * accuracy([p["gold"] for p in rows], [p["extracted"] for p in rows])}

    by_subject = {subject: acc([p for p in preds if p["subject"] == subject]) for subject in chosen}
    by_category = {cat: acc(rows) for cat, subs in task.categories.items()
                   if (rows := [p for p in preds if p["subject"] in subs])}
    micro, macro = acc(preds)["acc"], mean([v["acc"] for v in by_subject.values()])
    return {"acc": micro if task.overall == "micro" else macro, "acc_micro": micro, "acc_macro": macro,
            "overall": task.overall, "n": len(preds), "truncated_prompts": truncated,
            "by_subject": by_subject, "by_category": by_category}
