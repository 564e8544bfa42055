"""`medtrain prep`: raw files -> tokenized dataset, in parallel workers, written atomically.

Uncompressed JSON Lines are cut into byte ranges that the workers read, parse and encode themselves; compressed
JSON Lines travel to them as raw lines; CSV, JSON arrays and plain text are parsed here. Results are written back
in input order, so two runs on the same inputs give byte-identical datasets.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing as mp
import os
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medtrain.core import __version__ as MEDTRAIN_VERSION
from medtrain.core.digest import sha256_file
from medtrain.core.disk import disk_full_as_error, disk_full_error, is_disk_full
from medtrain.core.log import get_logger
from medtrain.core.templates import MODE_TEMPLATES, Template, get_template
from medtrain.data_prep.format import DatasetError, DatasetWriter, check_token_range, read_manifest
from medtrain.data_prep.sources import (
    SOURCES,
    ByteCounter,
    ByteRange,
    RawLines,
    Skip,
    Source,
    byte_ranges,
    detect_answer_base,
    iter_raw_chunks,
    to_record,
)
from medtrain.data_prep.split import SplitWriter, check_fraction
from medtrain.data_prep.tokenizer import Encoder, encode_chunk

log = get_logger(__name__)

PAPER_TARGET_TOKENS = 1_000_000_000
SHOW_SKIPS = 5


@dataclass
class PrepStats:
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_skips: list[str] = field(default_factory=list)
    per_source: dict[str, dict] = field(default_factory=dict)
    truncated_docs: int = 0
    truncated_tokens: int = 0
    response_truncated: int = 0
    prompt_too_long: int = 0
    without_explanation: int = 0
    placeholder_explanations: int = 0

    def skip(self, s: Skip, source: str) -> None:
        self.skipped[s.reason] += 1
        self.per_source[source]["skipped"][s.reason] = self.per_source[source]["skipped"].get(s.reason, 0) + 1
        if len(self.first_skips) < SHOW_SKIPS:
            self.first_skips.append(f"{s.where}: {s.reason}" + (f" ({s.detail})" if s.detail else ""))


@dataclass
class ChunkResult:
    flat: np.ndarray
    lengths: np.ndarray
    prompt_lens: np.ndarray | None
    skips: list[Skip]
    records: int
    without_explanation: int
    lines: int = 0
    """Lines read from a ByteRange (the writer keeps the running line number)."""
    placeholder_explanations: int = 0
    shard: str | None = None
    """Where the worker wrote `flat` instead of returning it (the writer appends it with copy_file_range)."""


@dataclass
class Parsed:
    """Records the main process already read (CSV, JSON arrays, plain text): only their texts travel."""
    items: list


Chunk = ByteRange | RawLines | Parsed
"""A ByteRange a worker reads itself (uncompressed JSON Lines); raw lines read here (compressed JSON Lines),
parsed in the worker; or records parsed here."""


def parse_chunk(source: Source, template, chunk: Chunk) -> tuple[list, int]:
    """Records of one chunk (documents, examples, skips) and the number of lines read from a ByteRange."""
    if isinstance(chunk, ByteRange):
        raw = chunk.read_lines()
        items = [to_record(source, template, "", b) for b in raw]
        for k, item in enumerate(items):
            if isinstance(item, Skip):
                item.line = k + 1
        return [i for i in items if i is not None], len(raw)
    if isinstance(chunk, RawLines):
        items = [to_record(source, template, chunk.where(i), b) for i, b in enumerate(chunk.lines)]
        return [i for i in items if i is not None], 0
    return chunk.items, 0


def texts_of(records: list, sft: bool) -> list[str]:
    """What the tokenizer sees: each document's text, or each example's prompt and response in turn."""
    return [t for e in records for t in (e.prompt, e.response)] if sft else [d.text for d in records]


def process_chunk(encoder: Encoder, source: Source, template, chunk: Chunk, shard: str | None = None) -> ChunkResult:
    """Parse and encode one chunk of one file; runs in a worker process."""
    items, lines = parse_chunk(source, template, chunk)
    skips = [i for i in items if isinstance(i, Skip)]
    good = [i for i in items if not isinstance(i, Skip)]
    sft = source.kind == "sft"
    if not good:
        empty = np.empty(0, dtype=np.int64)
        return ChunkResult(empty, empty, empty if sft else None, skips, 0, 0, lines)
    flat, lengths, prompt_lens = encode_chunk(encoder, texts_of(good, sft), sft)
    without = sum(1 for e in good if not e.meta.get("has_explanation", True)) if sft else 0
    placeholders = sum(1 for e in good if e.meta.get("placeholder_explanation")) if sft else 0
    if shard is not None and flat.dtype == np.uint16:  # the on-disk dtype: skip the pipe, write it here
        check_token_range(flat, encoder.info.vocab_size, str(chunk))
        flat.tofile(shard)
        return ChunkResult(np.empty(0, dtype=flat.dtype), lengths, prompt_lens, skips, len(good), without, lines,
                           placeholders, shard)
    return ChunkResult(flat, lengths, prompt_lens, skips, len(good), without, lines, placeholders)


_WORKER_ENCODER: Encoder | None = None


def _init_worker(path: str, backend: str) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = Encoder(path, backend=backend)


def _work(source: Source, template, chunk: Chunk, shard: str | None) -> ChunkResult:
    return process_chunk(_WORKER_ENCODER, source, template, chunk, shard)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


@dataclass
class Resolved:
    """What a prep request names, checked: the source (with its answer index decided), template and inputs."""
    name: str
    source: Source
    template: Template | None
    inputs: list[Path]
    answers: dict | None = None
    """MedMCQA's cop: counted from 0 or 1, and how that was decided (recorded in the manifest)."""

    @property
    def sft(self) -> bool:
        return self.source.kind == "sft"


def resolve(name: str, inputs: list[Path], mode: str | None, answer_index: int | None) -> Resolved:
    if name not in SOURCES:
        raise DatasetError(f"unknown source '{name}'; one of {', '.join(SOURCES)}")
    src, answers, template = SOURCES[name], None, None
    inputs = [Path(p) for p in inputs]
    for p in inputs:
        if not p.is_file():
            raise DatasetError(f"{p}: no such input file")
    if src.numbered_answers:
        if answer_index not in (None, 0, 1):
            raise DatasetError(f"--answer-index {answer_index} must be 0 or 1")
        base, why = (answer_index, "given by --answer-index") if answer_index is not None else \
            detect_answer_base(inputs)
        src, answers = src.with_answer_base(base), {"base": base, "how": why}
        log.info(f"prep {name}: answer index counted from {base} ({why})")
    if src.kind == "sft":
        if mode not in MODE_TEMPLATES:
            raise DatasetError(f"--mode {mode!r} must be one of {', '.join(MODE_TEMPLATES)}")
        template = get_template(MODE_TEMPLATES[mode])
    return Resolved(name, src, template, inputs, answers)


class ChunkPlan:
    """The inputs as one stream of (file, chunk): workers read uncompressed JSON Lines by byte range, compressed
    ones travel as raw lines hashed as read, other layouts are parsed here. Each file's hash and counts are kept
    in `stats.per_source`, and `line_base` turns a worker's local line numbers into the file's."""

    def __init__(self, r: Resolved, stats: PrepStats, counter: ByteCounter, chunk_size: int, chunk_bytes: int):
        self.r, self.stats, self.counter = r, stats, counter
        self.chunk_size, self.chunk_bytes = chunk_size, chunk_bytes
        self.line_base: dict[str, int] = {}

    def __iter__(self) -> Iterator[tuple[str, Chunk]]:
        src = self.r.source
        for path in self.r.inputs:
            entry = self.stats.per_source[str(path)] = {"path": str(path), "sha256": None, "records": 0,
                                                        "skipped": {}}
            self.line_base[str(path)] = 0
            if src.parallel_json(path) and path.suffix != ".gz":
                entry["sha256"] = sha256_file(path)
                yield from ((str(path), rng) for rng in byte_ranges(path, self.chunk_bytes))
            elif src.parallel_json(path):
                digest = hashlib.sha256()
                yield from ((str(path), c) for c in iter_raw_chunks(path, self.chunk_size, self.counter, digest))
                entry["sha256"] = digest.hexdigest()
            else:
                entry["sha256"] = sha256_file(path)
                items = src.read(path, self.r.template, self.counter)
                yield from ((str(path), Parsed(c)) for c in _chunks(items, self.chunk_size))


def encode_all(r: Resolved, chunks: Iterator[tuple[str, Chunk]], plan: ChunkPlan, encoder: Encoder,
               writer: DatasetWriter, workers: int, seq_len: int, bar: tqdm) -> None:
    """Encode every chunk (in a pool of workers when there are several) and write the results in input order,
    with a bounded look-ahead: memory stays flat however large the corpus."""
    stats, counter = plan.stats, plan.counter
    pool = mp.get_context("fork").Pool(workers, initializer=_init_worker,
                                       initargs=(str(encoder.path), encoder.backend)) if workers > 1 else None
    window: deque = deque()

    def drain(keep: int) -> None:
        while len(window) > keep:
            path, pending, size = window.popleft()
            result: ChunkResult = pending.get() if pool else pending
            for skip in result.skips:
                if skip.line:
                    skip.where = f"{path}:{plan.line_base[path] + skip.line}"
            plan.line_base[path] += result.lines
            counter.bytes += size
            _write_chunk(writer, result, path, seq_len, stats)
            _show_rate(bar, counter.bytes, stats.records, writer.num_tokens)

    try:
        for seq, (path, chunk) in enumerate(chunks):
            shard = str(writer.tmp / f"shard-{seq:09d}.bin")
            pending = pool.apply_async(_work, (r.source, r.template, chunk, shard)) if pool else \
                process_chunk(encoder, r.source, r.template, chunk)
            window.append((path, pending, chunk.end - chunk.start if isinstance(chunk, ByteRange) else 0))
            drain(keep=2 * workers)
        drain(keep=0)
    finally:
        if pool:
            pool.terminate()


def _show_rate(bar: tqdm, done_bytes: int, records: int, tokens: int) -> None:
    elapsed = max(bar.format_dict["elapsed"], 1e-9)
    bar.n = done_bytes
    bar.set_postfix_str(f"{records / elapsed:,.0f} rec/s, {tokens / elapsed / 1e6:.2f} M tok/s", refresh=False)
    bar.update(0)


def report_skips(r: Resolved, stats: PrepStats, allow_missing_explanations: bool) -> None:
    """What was skipped or dropped, said once; with_reasoning on data without any explanation refused."""
    if stats.first_skips:
        log.warning(f"skipped {sum(stats.skipped.values())} records: " + ", ".join(f"{k}={v}" for k, v in
                                                                                 sorted(stats.skipped.items())))
        for line in stats.first_skips:
            log.warning(f"  {line}")
        dominant = dominant_skip(stats)
        if dominant:
            reason, count, read = dominant
            log.warning(f"{count} of {read} records skipped as {reason}: {SKIP_HINTS[reason]}")
    reasoning = r.template is not None and r.template.name == MODE_TEMPLATES["with_reasoning"]
    if reasoning and r.source.explanations and 0 < stats.records == stats.without_explanation \
            and not allow_missing_explanations:
        raise DatasetError(f"{', '.join(map(str, r.inputs))}: no record has an explanation (an Explanation column "
                           "or 'exp' field), so --mode with_reasoning would train answer-only data under the "
                           "reasoning template; pass --mode answer_only, or --allow-missing-explanations to keep it")
    if stats.placeholder_explanations:
        log.warning(f"dropped {stats.placeholder_explanations} placeholder explanations (such as 请等待更新, "
                    "'awaiting update'); those examples keep their answer")


def prep(source: str, inputs: list[Path], tokenizer: Path, out: Path, *, mode: str | None = None,
         seq_len: int = 4096, workers: int | None = None, overwrite: bool = False,
         target_tokens: int = PAPER_TARGET_TOKENS, chunk_size: int = 512, chunk_bytes: int = 1 << 20,
         hub: dict | None = None, answer_index: int | None = None, allow_missing_explanations: bool = False,
         val_fraction: float = 0.0) -> dict:
    """Prepare one dataset; returns its manifest. Raises DatasetError (nothing written) on unusable input.

    Resolve the request, plan the chunks, encode them in workers, report. `hub` (the ids and revisions of hub
    inputs and tokenizer) is recorded in the manifest. `val_fraction` holds that share of the documents out as
    OUT/val (data_prep/split.py); the manifest returned is the training side's."""
    if val_fraction:
        check_fraction(val_fraction)
    r = resolve(source, inputs, mode, answer_index)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass --overwrite to replace it")
    encoder, stats, counter = Encoder(tokenizer), PrepStats(), ByteCounter()
    total_bytes = sum(p.stat().st_size for p in r.inputs)
    plan = ChunkPlan(r, stats, counter, chunk_size, chunk_bytes)
    chunks = iter(plan)
    first = next(chunks, None)
    if first is not None:  # SentencePiece is kept only if it agrees with the HF tokenizer on real texts
        records, _ = parse_chunk(r.source, r.template, first[1])
        texts = texts_of([i for i in records if not isinstance(i, Skip)][:64], r.sft)
        if texts:
            encoder.agree_or_fall_back(texts)
    writer = DatasetWriter(out, encoder.info.vocab_size, sft=r.sft)
    writer = SplitWriter(writer, val_fraction) if val_fraction else writer
    # what a full disk's line says the dataset needs: ids at the writer's width for about one token per 3 bytes
    # of input (Chinese UTF-8 text; English runs ~4)
    needed = total_bytes * writer.dtype.itemsize // 3
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"prep {source}", file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, dynamic_ncols=True)
    try:
        encode_all(r, itertools.chain([first] if first else [], chunks), plan, encoder, writer,
                   max(1, workers or os.cpu_count() or 1), seq_len, bar)
        if writer.num_docs == 0:
            _raise_empty(stats, r.inputs)
        report_skips(r, stats, allow_missing_explanations)
    except BaseException as e:
        writer.abort()  # the staging goes, whatever stopped us
        if is_disk_full(e):
            raise disk_full_error(out, needed) from e
        raise
    finally:
        bar.n = counter.bytes
        bar.close()
    manifest = _manifest(r, encoder.info, seq_len, stats, writer, target_tokens)
    manifest.update({k: v for k, v in (("hub", hub), ("answer_index", r.answers)) if v})
    with disk_full_as_error(out, needed):
        writer.finalize(manifest, overwrite=overwrite)
    return read_manifest(out)


def _write_chunk(writer: DatasetWriter, r: ChunkResult, path: str, seq_len: int, stats: PrepStats) -> None:
    """Write one encoded chunk and count, vectorised, what a seq_len run would truncate."""
    for skip in r.skips:
        stats.skip(skip, path)
    stats.records += r.records
    stats.per_source[path]["records"] += r.records
    if not r.records:
        return
    if r.shard:
        writer.add_shard(Path(r.shard), r.lengths, r.prompt_lens)
    else:
        writer.add_many(r.flat, r.lengths, r.prompt_lens)
    stats.without_explanation += r.without_explanation
    stats.placeholder_explanations += r.placeholder_explanations
    if r.prompt_lens is None:
        over = r.lengths > seq_len
        stats.truncated_docs += int(over.sum())
        stats.truncated_tokens += int((r.lengths[over] - seq_len).sum())
        return
    stats.prompt_too_long += int((r.prompt_lens >= seq_len).sum())
    stats.response_truncated += int(((r.prompt_lens < seq_len) & (r.lengths > seq_len)).sum())


def _manifest(r: Resolved, info, seq_len, stats: PrepStats, writer: DatasetWriter, target) -> dict:
    kind, source, template, version = r.source.kind, r.name, r.template, MEDTRAIN_VERSION
    num_tokens = writer.num_tokens
    report = {"seq_len": seq_len, "records": stats.records, "skipped": dict(sorted(stats.skipped.items()))}
    if kind == "continual":
        report.update({
            "packed_tokens_dropped": num_tokens % seq_len,
            "per_document_truncated_docs": stats.truncated_docs,
            "per_document_truncated_tokens": stats.truncated_tokens,
            "target_tokens": target,
            "fraction_of_target": round(num_tokens / target, 6) if target else None,
        })
    else:
        report.update({"response_truncated": stats.response_truncated, "prompt_too_long": stats.prompt_too_long,
                       "without_explanation": stats.without_explanation,
                       "placeholder_explanations_dropped": stats.placeholder_explanations})
    return {
        "kind": kind,
        "source_type": source,
        "tokenizer": {k: v for k, v in info.to_manifest().items() if k != "backend"},
        "sources": list(stats.per_source.values()),
        "template": template.describe() if template else None,
        "stats": report,
        "medtrain_version": version,
    }


# what a reason that skips most of a file usually means, said once under the skip counts
SKIP_HINTS = {
    "answer_not_in_options": "the options were not read as lettered lines ('A 内容' one per line); check the "
                             "Options column's separator and one row with `medtrain prep inspect`",
    "option_without_letter": "the options cell has lines without a leading letter; check the separator",
    "no_answer": "the answer field is empty or named otherwise: is this an unlabelled test split?",
    "unlabelled_test_record": "this is an unlabelled test split (cop -1); prepare the train or dev split",
    "malformed_json": "the file may not be JSON Lines or a JSON array; check its first lines",
    "not_an_object": "records are not JSON objects; check the file's layout",
    "non_utf8": "the file is not UTF-8; convert it (iconv -f GBK -t UTF-8)",
    "no_options": "records have no 'options' object; is this the right `prep` source for the file?",
}


def dominant_skip(stats: PrepStats) -> tuple[str, int, int] | None:
    """(reason, count, records read) when one reason with a known cause (SKIP_HINTS) skips most records read."""
    read = stats.records + sum(stats.skipped.values())
    reason, count = max(stats.skipped.items(), key=lambda kv: kv[1], default=(None, 0))
    if reason in SKIP_HINTS and read and count / read > 0.5:
        return reason, count, read
    return None


def _raise_empty(stats: PrepStats, inputs: list[Path]) -> None:
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(stats.skipped.items())) or "no records"
    first = f"; first: {stats.first_skips[0]}" if stats.first_skips else ""
    dominant = dominant_skip(stats)
    cause = f"{SKIP_HINTS[dominant[0]]}; " if dominant else ""
    raise DatasetError(f"{', '.join(map(str, inputs))}: nothing usable ({reasons}){first}; {cause}nothing written")
