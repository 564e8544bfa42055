"""Benchmark files as questions: CMExam (CSV or a JSON copy), MMLU (headerless) and CMMLU (header) folders, and
records files of MedQA and MedMCQA. Every record is read through its benchmark's schema (core.benchmarks), the
same one prep reads training data with; eval keeps every question in the denominator, so a record the schema
refuses stops the eval at that record rather than being skipped."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core.benchmarks import cmexam, medmcqa, medqa, mmlu
from medtrain.core.benchmarks.record import MCRecord, SchemaError
from medtrain.eval.task import MultipleChoiceTask, TaskError


@dataclass
class Question:
    id: str
    row: int
    question: str
    options: dict[str, str]
    answer: str
    meta: dict[str, str] = field(default_factory=dict)


def _question(record: MCRecord, qid: str, row: int, meta: dict) -> Question:
    return Question(qid, row, record.question, record.options, record.answer, meta)


def _read(read, where: str) -> MCRecord:
    """A record through its schema; a refused one stops the eval here, naming the record."""
    try:
        return read()
    except SchemaError as e:
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
    if path.suffix in (".jsonl", ".json"):
        rows = [(f"{path}:{i + 1}", rec) for i, rec in enumerate(load_records(path))]
    else:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = cmexam.check_header(reader.fieldnames or [], path, TaskError)
            rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    out = []
    for i, (where, row) in enumerate(rows):
        record = _read(lambda row=row: cmexam.from_record(row), where)
        meta = {k: v for k, v in row.items() if k not in ("Question", "Options", "Answer", "Explanation", "id")}
        out.append(_question(record, record.id or str(i), i, meta))
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
    return [_question(_read(lambda row=row: mmlu.from_row(row, layout.header), f"{path}:{i + 1 + layout.header}"),
                      f"{subject}/{i}", i, {"subject": subject}) for i, row in enumerate(rows)]


def read_records(task: MultipleChoiceTask, path: Path, subject: str, answer_index: int | None = None
                 ) -> list[Question]:
    """A JSON Lines file (or JSON array) of questions, each with its own number of options. MedMCQA's `cop`
    counts from `answer_index` when given (--answer-index), else from what the file's values show."""
    records = load_records(path)
    base = answer_index
    if task.layout.records == "medmcqa" and base is None:
        base = _answer_base(records, path)
    read = {"medqa": medqa.from_record, "medmcqa": lambda rec: medmcqa.from_record(rec, base)}[task.layout.records]
    out = []
    for i, rec in enumerate(records):
        record = _read(lambda rec=rec: read(rec), f"{path}:{i + 1}")
        if record.answer not in record.options:
            raise TaskError(f"{path}:{i + 1}: no {task.layout.records} answer in this record (keys: "
                            f"{', '.join(sorted(rec))[:120]})")
        out.append(_question(record, record.id or f"{subject}/{i}", i, {"subject": subject}))
    return out


def keyed_lines(path: Path, keys: tuple[str, ...], expected: str) -> Iterator[tuple[int, tuple]]:
    """(line number, the values of `keys`) for each line of a JSON Lines file medtrain reads back (predictions,
    contamination findings); a line without them stops at that line, saying what a line holds."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                yield lineno, tuple(rec[k] for k in keys)
            except (json.JSONDecodeError, KeyError, TypeError):
                raise TaskError(f"{path}:{lineno}: expected {expected}") from None


def load_records(path: Path) -> list[dict]:
    """A JSON Lines file or a JSON array, whichever the file holds."""
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as e:
        raise TaskError(f"{path}: not JSON Lines nor a JSON array ({e.msg}, line {e.lineno})") from None


def _answer_base(records: list[dict], path: Path) -> int:
    """What MedMCQA's `cop` counts from, read from the file's values (--answer-index says it instead)."""
    try:
        base = medmcqa.index_base({cop for r in records if (cop := medmcqa.cop_of(r)) is not None})
    except SchemaError as e:
        raise TaskError(f"{path}: {e.detail}") from None
    if base is None:
        raise TaskError(f"{path}: cop holds only 1-3, which fits both MedMCQA's official release (from 1) and its "
                        "Hugging Face copy (from 0); say which with --answer-index 1 or 0")
    return base


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
