"""`medtrain contamination` as a library function: are the eval questions, or near copies of them, in the
training data? Both sides in the training data's own tokenization: the questions encoded with the tokenizer the
datasets were prepared with, their n-grams looked for in the datasets' tokens (scan), each candidate confirmed
on its text (confirm), and the findings written beside a summary."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medtrain.contamination.confirm import Finding, confirm
from medtrain.contamination.ngrams import QuestionGrams
from medtrain.contamination.questions import EvalQuestion, eval_questions
from medtrain.contamination.scan import Candidates, default_workers, scan
from medtrain.core.digest import sha256_file
from medtrain.core.errors import UserError
from medtrain.core.publish import refuse_existing, staged_dir
from medtrain.data_prep.format import TokenDataset
from medtrain.data_prep.tokenizer import Encoder

DEFAULT_NGRAM = 13
"""GPT-3's and lm-evaluation-harness's window."""
DEFAULT_MIN_RATIO = 0.8


class ContaminationError(UserError):
    """Inputs the check cannot compare: one line naming them and the fix."""


@dataclass
class ContaminationRequest:
    train: list[Path]
    evals: list[tuple[str, Path]]
    out: Path
    ngram: int = DEFAULT_NGRAM
    min_ratio: float = DEFAULT_MIN_RATIO
    workers: int | None = None
    tokenizer: Path | None = None
    """Where the datasets' tokenizer is when the path their manifests record is not on this machine."""
    answer_index: int | None = None
    overwrite: bool = False


def open_datasets(paths: list[Path]) -> list[TokenDataset]:
    """The --train datasets, refused unless one tokenizer wrote them all (their ids would mean other texts)."""
    if not paths:
        raise ContaminationError("give at least one --train DATASET (a `medtrain prep` output)")
    datasets = [TokenDataset(p) for p in paths]
    first = datasets[0].manifest["tokenizer"]
    for d in datasets[1:]:
        other = d.manifest["tokenizer"]
        if other.get("fingerprint") != first.get("fingerprint"):
            raise ContaminationError(
                f"--train {d.root} was prepared with tokenizer {other.get('path')} (ids "
                f"{str(other.get('fingerprint'))[:12]}), --train {datasets[0].root} with {first.get('path')} (ids "
                f"{str(first.get('fingerprint'))[:12]}): one check reads one tokenization; run it once per tokenizer")
    return datasets


def load_encoder(datasets: list[TokenDataset], tokenizer: Path | None) -> Encoder:
    recorded = datasets[0].manifest["tokenizer"]
    path = Path(tokenizer or recorded["path"])
    if not path.exists():
        raise ContaminationError(f"{datasets[0].root}: its tokenizer {path} is not on this machine; pass the same "
                                 "tokenizer with --tokenizer DIR")
    encoder = Encoder(path)
    if encoder.fingerprint != recorded.get("fingerprint"):
        raise ContaminationError(f"--tokenizer {path} splits text into other ids than the one {datasets[0].root} "
                                 f"was prepared with ({recorded['path']}); pass that tokenizer")
    return encoder


def check(request: ContaminationRequest, say: Callable[[str], None]) -> dict:
    if not 1 <= request.ngram <= 64:
        raise ContaminationError(f"--ngram {request.ngram}: between 1 and 64 tokens (13 is the usual)")
    if not 0 < request.min_ratio <= 1:
        raise ContaminationError(f"--min-ratio {request.min_ratio}: a Levenshtein ratio in (0, 1]")
    refuse_existing(request.out, request.overwrite)
    datasets = open_datasets(request.train)
    questions = [q for task, path in request.evals for q in eval_questions(task, path, request.answer_index)]
    if not questions:
        raise ContaminationError("give at least one --eval TASK=PATH with questions in it")
    encoder = load_encoder(datasets, request.tokenizer)
    ids = [np.asarray(x, dtype=np.int64) for x in encoder.encode_batch([q.text for q in questions])]
    grams = QuestionGrams.build(ids, request.ngram)
    workers = request.workers or default_workers()
    sizes = [len(d.tokens) for d in datasets]
    candidates = Candidates(np.array([len(x) for x in ids]), [d.offsets for d in datasets])
    say(f"contamination: {len(questions):,} questions ({sum(len(x) < request.ngram for x in ids)} shorter than "
        f"{request.ngram} tokens, compared whole) against {sum(sizes):,} training tokens, {workers} workers")
    start = time.perf_counter()
    with tqdm(total=sum(sizes), unit="tok", unit_scale=True, desc="scan", file=sys.stderr,
              mininterval=0.5 if sys.stderr.isatty() else 10.0) as bar:
        scanned = scan(grams, [d.root for d in datasets], sizes, candidates, workers, bar.update)
    seconds = time.perf_counter() - start
    texts = [encoder.decode(x) for x in ids]
    findings = confirm(candidates, texts, [d.__getitem__ for d in datasets], encoder.decode, request.min_ratio)
    summary = summarize(request, datasets, questions, findings, {
        "tokens_scanned": scanned, "seconds": round(seconds, 3), "workers": workers,
        "tokens_per_s": round(scanned / max(seconds, 1e-9)),
        "tokens_per_s_per_worker": round(scanned / max(seconds, 1e-9) / workers),
        "candidates": len(candidates.pairs)})
    write(request.out, summary, finding_lines(questions, findings, datasets))
    return summary


def summarize(request: ContaminationRequest, datasets: list[TokenDataset], questions: list[EvalQuestion],
              findings: dict[int, Finding], scan_figures: dict) -> dict:
    tasks = {}
    for task, path in request.evals:
        mine = [i for i, q in enumerate(questions) if q.task == task]
        flagged = sum(i in findings for i in mine)
        tasks[task] = {"data": str(path), "sha256": sha256_file(path) if path.is_file() else None,
                       "checked": len(mine), "flagged": flagged, "share": flagged / len(mine) if mine else 0.0}
    return {"ngram": request.ngram, "min_ratio": request.min_ratio,
            "tokenizer": {"path": datasets[0].manifest["tokenizer"]["path"],
                          "fingerprint": datasets[0].manifest["tokenizer"].get("fingerprint")},
            "train": [{"path": str(d.root), "num_docs": len(d), "num_tokens": len(d.tokens)} for d in datasets],
            "tasks": tasks, "scan": scan_figures}


def finding_lines(questions: list[EvalQuestion], findings: dict[int, Finding], datasets: list[TokenDataset]
                  ) -> list[dict]:
    lines = []
    for i, f in sorted(findings.items()):
        q = questions[i]
        lines.append({"task": q.task, "index": q.index, "id": q.id, "train_dataset": str(datasets[f.dataset].root),
                      "train_doc": f.doc, "span": list(f.span), "shared_ngrams": f.windows,
                      "ratio": round(f.ratio, 4), "question": q.text, "train_text": f.train_text})
    return lines


def write(out: Path, summary: dict, lines: list[dict]) -> None:
    with staged_dir(out, kind="contamination") as tmp:
        with open(tmp / "contaminated.jsonl", "w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")


def summary_table(summary: dict) -> str:
    rows = [f"{'task':<10}{'checked':>10}{'flagged':>10}{'share':>9}   n-gram {summary['ngram']}, ratio >= "
            f"{summary['min_ratio']}"]
    for task, t in summary["tasks"].items():
        rows.append(f"{task:<10}{t['checked']:>10,}{t['flagged']:>10,}{100 * t['share']:>8.2f}%")
    s = summary["scan"]
    rows.append(f"scanned {s['tokens_scanned']:,} tokens in {s['seconds']:.1f} s ({s['tokens_per_s'] / 1e6:.1f}M "
                f"tokens/s, {s['tokens_per_s_per_worker'] / 1e6:.1f}M per worker)")
    return "\n".join(rows)
