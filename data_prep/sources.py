"""Streaming readers for the raw schemas. Each yields documents (continual), examples (sft) or skips.

A bad record never stops a run: it becomes a `Skip` with a reason and file:line, counted in the manifest.
A missing required column stops it (DatasetError), since every record would be skipped.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

import orjson

from medtrain.core.benchmarks import cmexam, cnmleqa, medmcqa, medqa
from medtrain.core.benchmarks.record import MCRecord, SchemaError
from medtrain.core.templates import Template, render_huatuo
from medtrain.data_prep.format import DatasetError

csv.field_size_limit(1 << 30)


@dataclass
class Doc:
    text: str
    where: str


@dataclass
class Example:
    prompt: str
    response: str
    where: str
    meta: dict = field(default_factory=dict)


@dataclass
class Skip:
    reason: str
    where: str
    detail: str = ""
    line: int = 0
    """Line within a ByteRange, when the worker cannot know the file's line number (the writer fixes `where`)."""


class ByteCounter:
    """Bytes consumed from the input files, for the progress bar's ETA."""

    def __init__(self) -> None:
        self.bytes = 0


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: Path, counter: ByteCounter | None = None) -> Iterator[tuple[int, str | None]]:
    """(line number, text), text None when the line is not UTF-8."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if counter:
                counter.bytes += len(raw)
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield lineno, None


def iter_json_records(path: Path, counter: ByteCounter | None = None) -> Iterator[tuple[str, object]]:
    """(file:line, record | Skip) from JSON Lines, or from a JSON array parsed incrementally; which one is read
    from the content (MedMCQA's official train.json is JSON Lines)."""
    if not is_json_lines(path):
        yield from _iter_json_array(path, counter)
        return
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if counter:
                counter.bytes += len(raw)
            where = f"{path}:{lineno}"
            rec = parse_json_line(raw, where)
            if rec is not None:
                yield where, rec


def parse_json_line(raw: bytes, where: str) -> object | Skip | None:
    """One JSON Lines record from raw bytes (None for a blank line). The only JSON Lines parser: the main
    process and the encoding workers both use it, so a record is skipped for the same reason either way."""
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)  # validates UTF-8 too; ~3x the standard library on these lines
    except orjson.JSONDecodeError as e:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Skip("non_utf8", where)
        return Skip("malformed_json", where, str(e).split(":")[0])


def _iter_json_array(path: Path, counter: ByteCounter | None) -> Iterator[tuple[str, object]]:
    decoder = json.JSONDecoder()
    with _open_binary(path) as f:
        raw = f.read(1 << 20)
        try:
            buf = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(f"{path}: not UTF-8; convert it (iconv -f GBK -t UTF-8) and retry") from None
        line, pos, started = 1, 0, False
        while True:
            while pos < len(buf) and buf[pos] in "\ufeff \t\r\n,[":  # a BOM too (files saved on Windows)
                if buf[pos] == "\n":
                    line += 1
                if buf[pos] == "[":
                    started = True
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                return
            if pos >= len(buf) or not started:
                more = f.read(1 << 20)
                if not more:
                    if not started:
                        raise DatasetError(f"{path}: neither a JSON array ('[' ...) nor JSON Lines (one "
                                           "'{...}' per line); check the file")
                    return
                if counter:
                    counter.bytes += len(more)
                buf = buf[pos:] + more.decode("utf-8", errors="replace")
                pos = 0
                continue
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                more = f.read(1 << 20)
                if more:
                    if counter:
                        counter.bytes += len(more)
                    buf = buf[pos:] + more.decode("utf-8", errors="replace")
                    pos = 0
                    continue
                raise DatasetError(
                    f"{path}:{line}: malformed JSON array ({e.msg}); fix the file or use .jsonl"
                ) from None
            yield f"{path}:{line}", obj
            line += buf.count("\n", pos, end)
            pos = end


def _flatten(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _flatten(v)]
    return []


def huatuo_record(rec: dict, where: str, template: Template | None = None) -> Doc | Skip:
    """Huatuo-26M: {"questions": [[variant, ...]], "answers": [text]} (or question/answer) per record."""
    questions = _flatten(rec.get("questions", rec.get("question")))
    answers = _flatten(rec.get("answers", rec.get("answer")))
    if not any(q.strip() for q in questions):
        return Skip("no_question", where)
    if not any(a.strip() for a in answers):
        return Skip("no_answers", where)
    return Doc(render_huatuo(questions, answers), where)


def text_record(rec: dict, where: str, template: Template | None = None) -> Doc | Skip:
    if not isinstance(rec.get("text"), str):
        return Skip("no_text_field", where)
    if not rec["text"].strip():
        return Skip("empty_text", where)
    return Doc(rec["text"], where)


def read_text(path: Path, template: Template | None = None,
              counter: ByteCounter | None = None) -> Iterator[Doc | Skip]:
    """Any other corpus: JSON Lines {"text": ...}, or plain text where blank lines separate documents."""
    if is_json(path):
        yield from read_json_source(text_record, path, template, counter)
        return
    para: list[str] = []
    start = 1
    for lineno, text in iter_lines(path, counter):
        if text is None:
            yield Skip("non_utf8", f"{path}:{lineno}")
            continue
        if text.strip():
            if not para:
                start = lineno
            para.append(text.rstrip("\r\n"))
        elif para:
            yield Doc("\n".join(para), f"{path}:{start}")
            para = []
    if para:
        yield Doc("\n".join(para), f"{path}:{start}")


def is_json(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith((".jsonl", ".json"))


def is_json_lines(path: Path) -> bool:
    """JSON Lines or a JSON array, by content, not extension: a `.json` file is JSON Lines when its first
    non-blank character opens an object rather than an array (MedMCQA's official train/dev/test.json, which its
    loader and HELM read line by line)."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        return True
    if not name.endswith(".json"):
        return False
    with _open_binary(path) as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] == b"{"


class _CountingLines:
    """Feeds csv.reader decoded lines while counting bytes and remembering which lines were not UTF-8."""

    def __init__(self, path: Path, counter: ByteCounter | None):
        self.path, self.counter = path, counter
        self.bad_lines: set[int] = set()

    def __iter__(self):
        with _open_binary(self.path) as f:
            for lineno, raw in enumerate(f, start=1):
                if self.counter:
                    self.counter.bytes += len(raw)
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.bad_lines.add(lineno)
                    yield raw.decode("utf-8", errors="replace")  # keeps the quoting intact; the row is skipped


def read_mcq_csv(path: Path, template: Template, counter: ByteCounter | None = None) -> Iterator[Example | Skip]:
    """CMExam CSV (Question, Options, Answer, Explanation + annotation columns kept as metadata)."""
    lines = _CountingLines(path, counter)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path}: empty file; expected a CSV with columns {', '.join(cmexam.REQUIRED)}") from None
    col = {h: i for i, h in enumerate(cmexam.check_header(header, path, DatasetError))}
    prev_line = reader.line_num
    for row in reader:
        first, prev_line = prev_line + 1, reader.line_num
        where = f"{path}:{first}"
        if any(n in lines.bad_lines for n in range(first, reader.line_num + 1)):
            yield Skip("non_utf8", where)
            continue
        yield cmexam_record({h: (row[i] if i < len(row) else "") for h, i in col.items()}, where, template)


def read_cmexam(path: Path, template: Template, counter: ByteCounter | None = None) -> Iterator[Example | Skip]:
    """CMExam in each form it is shared: the release's CSV, and copies as JSON Lines, a JSON array, parquet or a
    `datasets` Arrow folder (staged as JSON Lines by data_prep.inputs) with the same columns."""
    name = path.name.lower()
    if name.endswith((".xlsx", ".xls")):
        raise DatasetError(f"{path}: a spreadsheet; save it as CSV first (pandas: pd.read_excel('{path.name}')"
                           f".to_csv('{path.stem}.csv', index=False)) and pass the CSV")
    if is_json(path):
        yield from read_json_source(cmexam_record, path, template, counter)
    else:
        yield from read_mcq_csv(path, template, counter)


def cmexam_record(rec: dict, where: str, template: Template) -> Example | Skip:
    """One CMExam row or JSON record (core.benchmarks.cmexam reads every layout)."""
    return mcq_example(lambda: cmexam.from_record(rec), template, where)


# Explanations that say there is none yet (CMExam's spreadsheet has them): trained as reasoning they would teach
# the model to answer "awaiting update"; they are dropped (the answer is kept) and counted.
PLACEHOLDER_EXPLANATIONS = frozenset({
    "请等待更新", "等待更新", "待更新", "暂无解析", "暂无", "无", "略", "无解析", "解析略", "见教材", "同上",
    "n/a", "na", "none", "null", "nan", "-", "--", "...", "tbd", "to be updated",
})


def is_placeholder_explanation(text: str) -> bool:
    """As written ("...") or without its closing punctuation ("请等待更新。")."""
    text = text.strip().lower()
    return text in PLACEHOLDER_EXPLANATIONS or text.strip("。.!！") in PLACEHOLDER_EXPLANATIONS


def mcq_example(read: Callable[[], MCRecord], template: Template, where: str) -> Example | Skip:
    """A benchmark record (read through its schema) as an SFT example, or the reason it cannot be one."""
    try:
        r = read()
    except SchemaError as e:
        return Skip(e.reason, where, e.detail)
    if not r.question.strip():
        return Skip("no_question", where)
    if not r.answer:
        return Skip("no_answer", where)
    meta, explanation = dict(r.meta), r.explanation
    if explanation and is_placeholder_explanation(explanation):
        explanation, meta["placeholder_explanation"] = "", True
    meta["has_explanation"] = bool(explanation and explanation.strip())
    return Example(template.prompt(r.question.strip(), r.options), template.response(r.answer, explanation or ""),
                   where, meta)


def medqa_record(rec: dict, where: str, template: Template) -> Example | Skip:
    """MedQA, every public layout (core.benchmarks.medqa)."""
    return mcq_example(lambda: medqa.from_record(rec), template, where)


def medmcqa_record(rec: dict, where: str, template: Template, answer_base: int = 1) -> Example | Skip:
    """MedMCQA; `answer_base` is what `cop` counts from (detect_answer_base reads it from the files)."""
    return mcq_example(lambda: medmcqa.from_record(rec, answer_base), template, where)


def cnmleqa_record(rec: dict, where: str, template: Template) -> Example | Skip:
    return mcq_example(lambda: cnmleqa.from_record(rec), template, where)


def detect_answer_base(paths: list[Path]) -> tuple[int, str]:
    """(0 or 1, why) for MedMCQA's `cop`, from the values the files hold: a 0 or a -1 (the unlabelled test split)
    is the Hugging Face copy's 0-based ClassLabel; a 4 with four options is the official release's 1-based index.
    Files whose values are all 1-3 could be either, and are refused rather than guessed."""
    seen: set[int] = set()
    for path in paths:
        for _, rec in iter_json_records(path):
            if isinstance(rec, dict) and (cop := medmcqa.cop_of(rec)) is not None:
                seen.add(cop)
    try:
        base = medmcqa.index_base(seen)
    except medmcqa.AmbiguousBase:
        raise DatasetError(f"{', '.join(map(str, paths))}: cop holds both {sorted(seen & {0, -1})} (0-based) and 4 "
                           "(1-based with four options); prepare each copy on its own, with --answer-index 0 or 1"
                           ) from None
    if base is None:
        raise DatasetError(f"{', '.join(map(str, paths))}: cop holds only {sorted(seen)}, which fits both the "
                           "official release (counted from 1) and the Hugging Face copy (from 0); pass --answer-index "
                           "1 (official train/dev.json) or --answer-index 0 (Hugging Face parquet/Arrow)")
    if not seen:
        return 1, "no cop values"
    if base == 0:
        return 0, f"detected: cop {min(seen & {0, -1})} appears, so it counts from 0 (the Hugging Face copy)"
    return 1, "detected: cop 4 appears, so it counts from 1 (the official release)"


def to_record(source: Source, template: Template | None, where: str, raw: bytes) -> Doc | Example | Skip | None:
    """One JSON Lines line through a source's converter; runs in the encoding workers, so parsing is spread
    over every core."""
    rec = parse_json_line(raw, where)
    if rec is None or isinstance(rec, Skip):
        return rec
    if not isinstance(rec, dict):
        return Skip("not_an_object", where)
    return source.record(rec, where, template)


def read_json_source(record: RecordFn, path: Path, template: Template | None,
                     counter: ByteCounter | None = None) -> Iterator[Doc | Example | Skip]:
    """Records of a JSON Lines file or JSON array through a converter."""
    for where, rec in iter_json_records(path, counter):
        if isinstance(rec, Skip):
            yield rec
        elif not isinstance(rec, dict):
            yield Skip("not_an_object", where)
        else:
            yield record(rec, where, template)


RecordFn = Callable[[dict, str, "Template | None"], "Doc | Example | Skip"]
ReaderFn = Callable[[Path, "Template | None", "ByteCounter | None"], Iterator["Doc | Example | Skip"]]


@dataclass(frozen=True)
class Source:
    """A raw data source: everything medtrain needs to know to prepare it. Adding one is one entry below; the
    `medtrain prep NAME` command is generated from it."""
    name: str
    kind: Literal["continual", "sft"]
    about: str
    """The schema, for --help."""
    example: str
    record: RecordFn | None = None
    """JSON record -> document/example/skip, for sources whose files are JSON Lines or JSON arrays (these are
    parsed in the workers, in parallel)."""
    reader: ReaderFn | None = None
    """Whole-file reader for other layouts (CSV, plain text); defaults to JSON through `record`."""
    default_mode: str | None = None
    """sft: answer_only | with_reasoning."""
    explanations: bool = False
    """Whether the data set carries explanations (CMExam, MedMCQA): with_reasoning on a copy without any is refused
    unless allowed. MedQA has none: with_reasoning gives its examples the answer line alone, so they mix with the
    others (Table 4's CMExam+MedQA+MedMCQA)."""
    numbered_answers: bool = False
    """Answers stored as an option index whose base differs between copies (MedMCQA's cop): prep takes
    --answer-index 0|1 or detects it from the files."""

    def with_answer_base(self, base: int) -> Source:
        """This source with its answer index read from `base` (a picklable partial: the workers get it too)."""
        return replace(self, record=partial(self.record, answer_base=base))

    def read(self, path: Path, template: Template | None, counter: ByteCounter | None) -> Iterator:
        if self.reader is not None:
            return self.reader(path, template, counter)
        return read_json_source(self.record, path, template, counter)

    def parallel_json(self, path: Path) -> bool:
        """Whether the workers parse this file's lines themselves (JSON Lines through `record`)."""
        return self.record is not None and self.reader is None and is_json_lines(path)


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("huatuo", "continual", "Huatuo-26M QA (jsonl, json, jsonl.gz) for continual pretraining.",
           "medtrain prep huatuo --input huatuo_encyclopedia_qa.jsonl --tokenizer TOK --out data/huatuo",
           record=huatuo_record),
    Source("text", "continual", "Any corpus: plain text (blank lines separate documents) or jsonl {\"text\": ...}.",
           "medtrain prep text --input general.jsonl --tokenizer TOK --out data/general",
           record=text_record, reader=read_text),
    Source("cmexam", "sft", "CMExam (Question, Options, Answer, Explanation) as Alpaca SFT examples: the release's "
           "CSV, or a copy as JSON Lines, JSON, parquet or a datasets folder with the same columns.",
           "medtrain prep cmexam --input train.csv --tokenizer TOK --out data/cmexam --mode with_reasoning",
           reader=read_cmexam, default_mode="with_reasoning", explanations=True),
    Source("medqa", "sft", "MedQA (question, options, answer_idx or answer): US 4/5-option, Mainland, Taiwan, "
           "the Hugging Face copies, bigbio's and the GBaker copy's {sent1, ending0..3, label}; no explanations: "
           "with_reasoning (the default, as for CMExam and MedMCQA, so they mix) gives the answer line alone.",
           "medtrain prep medqa --input train.jsonl --tokenizer TOK --out data/medqa", record=medqa_record,
           default_mode="with_reasoning"),
    Source("medmcqa", "sft", "MedMCQA (question, opa..opd, cop, exp): the official release's JSON Lines train/dev.json "
           "(cop from 1) or the Hugging Face copy (cop from 0, -1 unlabelled); --answer-index 0|1, else detected.",
           "medtrain prep medmcqa --input train.json --tokenizer TOK --out data/medmcqa", record=medmcqa_record,
           default_mode="with_reasoning", explanations=True, numbered_answers=True),
    Source("cnmleqa", "sft", "CNMLEQA (question, opa..ope, answer \"opa\"..\"ope\"): China's licensing exam, "
           "the release's JSON array; no explanations, so with_reasoning gives the answer line alone.",
           "medtrain prep cnmleqa --input CNMLEQA-3k.json --tokenizer TOK --out data/cnmleqa",
           record=cnmleqa_record, default_mode="with_reasoning"),
)}


@dataclass
class RawLines:
    """A chunk of a JSON Lines file as bytes, for the workers to parse: file, first line number, lines."""
    path: str
    first: int
    lines: list[bytes]

    def where(self, i: int) -> str:
        return f"{self.path}:{self.first + i}"


@dataclass
class ByteRange:
    """A piece of an uncompressed JSON Lines file, cut at line boundaries, that a worker reads for itself: only
    three values cross the pipe, and the writer, which sees ranges in order, turns local lines into file:line."""
    path: str
    start: int
    end: int

    def read_lines(self) -> list[bytes]:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            data = f.read(self.end - self.start)
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        return lines


def byte_ranges(path: Path, target: int) -> Iterator[ByteRange]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = 0
        while start < size:
            f.seek(min(start + target, size))
            f.readline()  # on to the start of the next line
            end = min(f.tell(), size)
            yield ByteRange(str(path), start, end)
            start = end


def iter_raw_chunks(path: Path, size: int, counter: ByteCounter | None = None,
                    digest=None) -> Iterator[RawLines]:
    """Chunks of raw lines read in C (islice over the file); the file's hash is updated as it is read."""
    first = 1
    with _open_binary(path) as f:
        while lines := list(itertools.islice(f, size)):
            if digest is not None:
                digest.update(b"".join(lines))
            if counter:
                counter.bytes += sum(map(len, lines))
            yield RawLines(str(path), first, lines)
            first += len(lines)
