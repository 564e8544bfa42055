"""Benchmark files in their released layouts: CMExam CSV, MMLU (headerless) and CMMLU (header) folders."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core.templates import OptionError, canonical_answer
from medtrain.core.templates import parse_options as parse_cell
from medtrain.eval.task import MultipleChoiceTask, TaskError


@dataclass
class Question:
    id: str
    row: int
    question: str
    options: dict[str, str]
    answer: str
    meta: dict[str, str] = field(default_factory=dict)


def parse_options(cell: str, where: str) -> dict[str, str]:
    try:
        return parse_cell(cell)
    except OptionError as e:
        raise TaskError(f"{where}: {e}") from None


def read_cmexam(path: Path) -> list[Question]:
    """Every row becomes a question (rows without a gold answer are kept and reported; they count as wrong)."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: no such CMExam CSV")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lstrip("\ufeff") for h in reader.fieldnames or []]
        missing = [c for c in ("Question", "Options", "Answer") if c not in header]
        if missing:
            raise TaskError(f"{path}:1: missing column(s) {', '.join(missing)}; CMExam CSVs have "
                            "Question,Options,Answer,Explanation")
        reader.fieldnames = header
        out = []
        for i, row in enumerate(reader):
            where = f"{path}:{reader.line_num}"
            options = parse_options(row["Options"] or "", where)
            meta = {k: row[k] for k in header if k not in ("Question", "Options", "Answer", "Explanation", "id")}
            qid = row.get("id") or str(i)
            out.append(Question(qid, i, row["Question"], options, canonical_answer(row["Answer"] or "", options), meta))
    return out


def read_mc_subject(task: MultipleChoiceTask, root: Path, subject: str, split: str) -> list[Question]:
    layout = task.layout
    path = Path(root) / getattr(layout, split).format(subject=subject)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if layout.header:
        rows = rows[1:]
    out = []
    for i, row in enumerate(rows):
        cells = row[1:] if layout.header else row  # CMMLU's first column is an unnamed index
        if len(cells) < 6:
            raise TaskError(f"{path}:{i + 1 + layout.header}: expected question, A, B, C, D, answer; got "
                            f"{len(cells)} columns")
        q, a, b, c, d, ans = cells[:6]
        out.append(Question(f"{subject}/{i}", i, q, {"A": a, "B": b, "C": c, "D": d}, ans.strip().upper(),
                            {"subject": subject}))
    return out


def mc_subjects(task: MultipleChoiceTask, root: Path) -> list[str]:
    root = Path(root)
    pattern = task.layout.test
    prefix, suffix = pattern.split("{subject}")
    folder_part, _, name_prefix = prefix.rpartition("/")
    folder = root / folder_part
    if not folder.is_dir():
        raise TaskError(f"{root}: no {folder_part}/ folder; expected the released {task.task} layout "
                        f"({task.layout.dev}, {pattern})")
    subjects = sorted(p.name[len(name_prefix):-len(suffix)] for p in folder.iterdir()
                      if p.name.startswith(name_prefix) and p.name.endswith(suffix))
    if not subjects:
        raise TaskError(f"{folder}: no files matching {pattern}")
    lacking = [s for s in subjects if not (root / task.layout.dev.format(subject=s)).is_file()]
    if lacking:
        raise TaskError(f"{root}: no {task.layout.dev.format(subject=lacking[0])} for subject '{lacking[0]}'; is "
                        f"this a {task.task} folder? {task.task} has {task.layout.dev} and {pattern}")
    return subjects
