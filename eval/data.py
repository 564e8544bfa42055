"""Benchmark files in their released layouts: CMExam CSV, MMLU (headerless) and CMMLU (header) folders, and
records files in MedQA's and MedMCQA's released schemas (official and Hugging Face copies)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core.templates import (
    MEDMCQA_OPTION_KEYS,
    OptionError,
    canonical_answer,
    cop_of,
    index_base,
    medmcqa_answer,
)
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
    if path.is_dir():
        if (path / "manifest.json").is_file():
            raise TaskError(f"{path} is a prepared (tokenized) training dataset; eval reads CMExam's CSV itself "
                            "(Question, Options, Answer), e.g. data/cmexam/test_with_annotations.csv")
        found = sorted(p.name for p in path.glob("*.csv"))
        raise TaskError(f"{path} is a folder; pass the CMExam CSV itself"
                        + (f" (here: {', '.join(found[:4])})" if found else " (Question, Options, Answer)"))
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


def read_mc_subject(task: MultipleChoiceTask, root: Path, subject: str, split: str,
                    answer_index: int | None = None) -> list[Question]:
    layout = task.layout
    if layout.kind == "records":
        name = getattr(layout, split)
        if not name or not (Path(root) / name).is_file():
            if split == "dev":
                return []  # zero-shot needs no dev file; --shots > 0 is refused by the caller, naming the count
            raise TaskError(f"{root}: no {name}; {task.task} reads {layout.test} (and {layout.dev or 'no dev'} for "
                            "few-shot) in its released schema")
        return read_records(task, Path(root) / name, subject, answer_index)
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


def read_records(task: MultipleChoiceTask, path: Path, subject: str, answer_index: int | None = None
                 ) -> list[Question]:
    """A JSON Lines file (or JSON array) of questions, each with its own number of options. MedMCQA's `cop`
    counts from `answer_index` when given (--answer-index), else from what the file's values show."""
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines()
                                                                           if x.strip()]
    except json.JSONDecodeError as e:
        raise TaskError(f"{path}: not JSON Lines nor a JSON array ({e.msg}, line {e.lineno})") from None
    base = answer_index
    if task.layout.records == "medmcqa" and base is None:
        try:
            base = index_base({cop for r in records if (cop := cop_of(r)) is not None})
        except OptionError as e:
            raise TaskError(f"{path}: {e}") from None
        if base is None:
            raise TaskError(f"{path}: cop holds only 1-3, which fits both MedMCQA's official release (from 1) and its "
                            "Hugging Face copy (from 0); say which with --answer-index 1 or 0")
    out = []
    for i, rec in enumerate(records):
        options, answer = (_medqa(rec) if task.layout.records == "medqa" else _medmcqa(rec, base))
        if task.layout.records == "medmcqa" and cop_of(rec) == -1:
            raise TaskError(f"{path}:{i + 1}: an unlabelled test record (cop -1): MedMCQA's test split has no "
                            "answers; evaluate on its validation split")
        if not options or answer not in options:
            raise TaskError(f"{path}:{i + 1}: no {task.layout.records} options and answer in this record (keys: "
                            f"{', '.join(sorted(rec))[:120]})")
        question = rec.get("question", rec.get("sent1", ""))
        out.append(Question(str(rec.get("id", f"{subject}/{i}")), i, str(question), options, answer,
                            {"subject": subject}))
    return out


def _medqa(rec: dict) -> tuple[dict[str, str], str]:
    """Official ({question, options: {A: ..}, answer_idx}) or GBaker's copy ({sent1, ending0..3, label})."""
    if isinstance(rec.get("options"), dict):
        options = {str(k).strip().upper(): str(v) for k, v in rec["options"].items()}
        return options, str(rec.get("answer_idx", "")).strip().upper()
    endings = [rec[k] for k in sorted((k for k in rec if k.startswith("ending")), key=lambda k: int(k[6:]))]
    options = {"ABCDEFGH"[i]: str(e) for i, e in enumerate(endings)}
    label = rec.get("label")
    return options, "ABCDEFGH"[int(label)] if isinstance(label, int) and 0 <= label < len(endings) else ""


def _medmcqa(rec: dict, base: int) -> tuple[dict[str, str], str]:
    """lm-eval's medmcqa: always the four options opa..opd, empty ones too."""
    options = {letter: str(rec[k]) for letter, k in zip("ABCD", MEDMCQA_OPTION_KEYS[:4], strict=True)
               if rec.get(k) is not None}
    return options, medmcqa_answer(rec, base)


def mc_subjects(task: MultipleChoiceTask, root: Path) -> list[str]:
    root = Path(root)
    if task.layout.kind == "records":
        return [task.task]
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
