"""`medtrain prep`: raw files -> tokenized dataset, in parallel workers, written atomically.

Records are parsed and rendered in the main process, encoded in `workers` processes in fixed-size chunks,
and written back in input order, so two runs on the same inputs give byte-identical datasets.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep.format import DatasetError, DatasetWriter, sha256_file
from data_prep.sources import (
    ByteCounter,
    Doc,
    Example,
    Skip,
    read_huatuo,
    read_mcq_csv,
    read_medmcqa,
    read_medqa,
    read_text,
)
from data_prep.templates import MODE_TEMPLATES, get_template
from data_prep.tokenizer import Encoder, encode_documents

SOURCES = {"huatuo": "continual", "text": "continual", "cmexam": "sft", "medqa": "sft", "medmcqa": "sft"}
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

    def skip(self, s: Skip, source: str) -> None:
        self.skipped[s.reason] += 1
        self.per_source[source]["skipped"][s.reason] = self.per_source[source]["skipped"].get(s.reason, 0) + 1
        if len(self.first_skips) < SHOW_SKIPS:
            self.first_skips.append(f"{s.where}: {s.reason}" + (f" ({s.detail})" if s.detail else ""))


def _reader(source: str, path: Path, template, counter: ByteCounter) -> Iterator[Doc | Example | Skip]:
    if source == "huatuo":
        return read_huatuo(path, counter)
    if source == "text":
        return read_text(path, counter)
    if source == "cmexam":
        return read_mcq_csv(path, template, counter)
    if source == "medqa":
        return read_medqa(path, template, counter)
    return read_medmcqa(path, template, counter)


_WORKER_ENCODER: Encoder | None = None


def _init_worker(path: str, backend: str) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = Encoder(path, backend=backend)


def _encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return encode_documents(_WORKER_ENCODER, texts)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def prep(source: str, inputs: list[Path], tokenizer: Path, out: Path, *, mode: str | None = None,
         seq_len: int = 4096, workers: int | None = None, overwrite: bool = False,
         target_tokens: int = PAPER_TARGET_TOKENS, chunk_size: int = 512,
         log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Prepare one dataset; returns its manifest. Raises DatasetError (nothing written) on unusable input."""
    if source not in SOURCES:
        raise DatasetError(f"unknown source '{source}'; one of {', '.join(SOURCES)}")
    kind = SOURCES[source]
    template = None
    if kind == "sft":
        if mode not in MODE_TEMPLATES:
            raise DatasetError(f"--mode {mode!r} must be one of {', '.join(MODE_TEMPLATES)}")
        template = get_template(MODE_TEMPLATES[mode])
    inputs = [Path(p) for p in inputs]
    for p in inputs:
        if not p.is_file():
            raise DatasetError(f"{p}: no such input file")
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass --overwrite to replace it")
    workers = max(1, workers or os.cpu_count() or 1)
    encoder = Encoder(tokenizer)
    info = encoder.info
    stats = PrepStats()
    counter = ByteCounter()
    total_bytes = sum(p.stat().st_size for p in inputs)

    def records() -> Iterator[Doc | Example]:
        for path in inputs:
            stats.per_source[str(path)] = {"path": str(path), "sha256": sha256_file(path), "records": 0,
                                           "skipped": {}}
            for item in _reader(source, path, template, counter):
                if isinstance(item, Skip):
                    stats.skip(item, str(path))
                else:
                    stats.records += 1
                    stats.per_source[str(path)]["records"] += 1
                    yield item

    chunks = _chunks(records(), chunk_size)
    first = next(chunks, None)
    if first is None:
        _raise_empty(stats, inputs)
    texts_of = _texts_for(kind)
    encoder.agree_or_fall_back(texts_of(first)[:64])
    info = encoder.info
    writer = DatasetWriter(out, info.vocab_size, sft=kind == "sft")
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"prep {source}", file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, dynamic_ncols=True)
    pool = None
    try:
        if workers > 1:
            pool = mp.get_context("fork").Pool(workers, initializer=_init_worker,
                                               initargs=(str(tokenizer), encoder.backend))
        window: deque = deque()  # bounded look-ahead: memory stays flat however large the corpus

        def drain(keep: int) -> None:
            while len(window) > keep:
                chunk, result = window.popleft()
                flat, lengths = result.get() if pool else result
                _write_chunk(writer, chunk, flat, lengths, kind, info, seq_len, stats)
                elapsed = max(bar.format_dict["elapsed"], 1e-9)
                bar.n = counter.bytes
                bar.set_postfix_str(f"{stats.records / elapsed:,.0f} rec/s, "
                                    f"{writer.num_tokens / elapsed / 1e6:.2f} M tok/s", refresh=False)
                bar.update(0)

        for chunk in itertools.chain([first], chunks):
            texts = texts_of(chunk)
            window.append((chunk, pool.apply_async(_encode, (texts,)) if pool else encode_documents(encoder, texts)))
            drain(keep=2 * workers)
        drain(keep=0)
    except BaseException:
        writer.abort()
        raise
    finally:
        if pool:
            pool.terminate()
        bar.n = counter.bytes
        bar.close()
    if stats.first_skips:
        log(f"skipped {sum(stats.skipped.values())} records: " + ", ".join(f"{k}={v}" for k, v in
                                                                         sorted(stats.skipped.items())))
        for line in stats.first_skips:
            log(f"  {line}")
    manifest = _manifest(kind, source, info, template, seq_len, stats, writer, target_tokens)
    writer.finalize(manifest, overwrite=overwrite)
    manifest.update({"num_docs": writer.num_docs, "num_tokens": writer.num_tokens})
    return manifest


def _texts_for(kind: str) -> Callable[[list], list[str]]:
    if kind == "continual":
        return lambda chunk: [d.text for d in chunk]
    return lambda chunk: [t for e in chunk for t in (e.prompt, e.response)]


def _write_chunk(writer: DatasetWriter, chunk: list, flat: np.ndarray, lengths: np.ndarray, kind: str, info,
                 seq_len: int, stats: PrepStats) -> None:
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    pieces = [flat[bounds[i]:bounds[i + 1]] for i in range(len(lengths))]
    bos = [info.bos_id] if info.bos_id is not None else []
    eos = [info.eos_id]
    if kind == "continual":
        for ids in pieces:
            doc = np.concatenate([bos, ids, eos]).astype(np.int64)
            if len(doc) > seq_len:
                stats.truncated_docs += 1
                stats.truncated_tokens += len(doc) - seq_len
            writer.add(doc)
        return
    for i, example in enumerate(chunk):
        prompt = np.concatenate([bos, pieces[2 * i]]).astype(np.int64)
        response = np.concatenate([pieces[2 * i + 1], eos]).astype(np.int64)
        total = len(prompt) + len(response)
        if len(prompt) >= seq_len:
            stats.prompt_too_long += 1
        elif total > seq_len:
            stats.response_truncated += 1
        if not example.meta.get("has_explanation", True):
            stats.without_explanation += 1
        writer.add(np.concatenate([prompt, response]), prompt_len=len(prompt))


def _manifest(kind, source, info, template, seq_len, stats: PrepStats, writer: DatasetWriter, target) -> dict:
    try:
        version = metadata.version("medtrain")
    except metadata.PackageNotFoundError:
        version = "unknown"
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
                       "empty_response": 0, "without_explanation": stats.without_explanation})
    return {
        "kind": kind,
        "source_type": source,
        "tokenizer": {k: v for k, v in info.to_manifest().items() if k != "backend"},
        "sources": list(stats.per_source.values()),
        "template": template.describe() if template else None,
        "stats": report,
        "medtrain_version": version,
    }


def _raise_empty(stats: PrepStats, inputs: list[Path]) -> None:
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(stats.skipped.items())) or "no records"
    first = f"; first: {stats.first_skips[0]}" if stats.first_skips else ""
    raise DatasetError(f"{', '.join(map(str, inputs))}: nothing usable ({reasons}){first}; nothing written")
