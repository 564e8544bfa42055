"""The scan over prepared datasets: their tokens.npy memory-mapped, cut into ranges that a pool of processes hash
(ngrams.QuestionGrams.hits), and the hits gathered here into candidates — a (dataset, question, document) with
how many question windows it shares and where in the document the question would sit.

Memory stays bounded whatever the corpus: a worker holds one slice of hashes, drops the mapped pages it has
read (madvise), and the candidates keep at most KEEP documents per question once they grow large."""

from __future__ import annotations

import mmap
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtrain.contamination.ngrams import QuestionGrams

RANGE_TOKENS = 1 << 22
"""Tokens per task handed to a worker (~0.1 s of hashing): small enough for a steady progress bar."""
KEEP = 8
"""Documents per question confirmed with Levenshtein, those sharing the most windows with it."""
PRUNE_AT = 1_000_000


class TokenFile:
    """A dataset's tokens.npy mapped read-only; `release` gives back the pages of a range once it is read, so a
    worker's resident memory is one range, not the corpus."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}[version]
            shape, _, dtype = read_header(f)
            self.header = f.tell()
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.tokens = np.frombuffer(self.map, dtype=dtype, count=shape[0], offset=self.header)

    def release(self, start: int, stop: int) -> None:
        page = mmap.PAGESIZE
        lo = (self.header + start * self.tokens.itemsize) // page * page
        hi = min(self.header + stop * self.tokens.itemsize, len(self.map))
        if hi > lo:
            self.map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


_worker: dict = {}


def _start_worker(grams: QuestionGrams) -> None:
    _worker["grams"], _worker["files"] = grams, {}


def _scan_range(task: tuple[int, str, int, int]) -> tuple[int, int, dict]:
    dataset, path, start, stop = task
    files = _worker["files"]
    if path not in files:
        files[path] = TokenFile(Path(path))
    tokens = files[path]
    hits = _worker["grams"].hits(tokens.tokens, start, stop)
    tokens.release(start, stop)
    return dataset, stop - start, hits


def ranges(corpora: list[Path], sizes: list[int]) -> list[tuple[int, str, int, int]]:
    return [(d, str(path / "tokens.npy"), a, min(a + RANGE_TOKENS, size))
            for d, (path, size) in enumerate(zip(corpora, sizes, strict=True)) for a in range(0, size, RANGE_TOKENS)]


def scan_hits(grams: QuestionGrams, tasks: list[tuple[int, str, int, int]], workers: int
              ) -> Iterator[tuple[int, int, dict]]:
    """(dataset, tokens scanned, hits) per range, in the order they finish; in this process for one worker."""
    if workers <= 1:
        _start_worker(grams)
        yield from map(_scan_range, tasks)
        return
    # spawn, not fork: the parent may hold a tokenizer's threads
    with multiprocessing.get_context("spawn").Pool(workers, _start_worker, (grams,)) as pool:
        yield from pool.imap_unordered(_scan_range, tasks)


@dataclass
class Candidate:
    windows: int
    start: int
    stop: int


class Candidates:
    """(dataset, question, document) -> shared windows and the span [start, stop) the question would cover in
    the corpus, widened over every hit (an inserted word moves later hits right)."""

    def __init__(self, grams: QuestionGrams, question_lens: np.ndarray, offsets: list[np.ndarray]):
        self.grams, self.question_lens, self.offsets = grams, question_lens, offsets
        self.pairs: dict[tuple[int, int, int], Candidate] = {}

    def add(self, dataset: int, hits: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        offsets = self.offsets[dataset]
        for length, (pos, keys) in hits.items():
            hit, question, offset = self.grams.tables[length].entries(keys)
            pos = pos[hit]
            doc = np.searchsorted(offsets, pos, side="right") - 1
            inside = pos + length <= offsets[doc + 1]  # a window across two documents is no evidence
            question, doc, start = question[inside], doc[inside], (pos - offset)[inside]
            self._merge(dataset, question, doc, start)
        if len(self.pairs) > PRUNE_AT:
            self.pairs = {key: self.pairs[key] for keys in self.by_question().values() for key in keys}

    def _merge(self, dataset: int, question: np.ndarray, doc: np.ndarray, start: np.ndarray) -> None:
        if not len(question):
            return
        key = question.astype(np.int64) * len(self.offsets[dataset]) + doc
        groups, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        lo = np.full(len(groups), np.iinfo(np.int64).max)
        hi = np.full(len(groups), np.iinfo(np.int64).min)
        np.minimum.at(lo, inverse, start)
        np.maximum.at(hi, inverse, start)
        qs, docs = np.divmod(groups, len(self.offsets[dataset]))
        for q, d, n, a, b in zip(qs.tolist(), docs.tolist(), counts.tolist(), lo.tolist(), hi.tolist(), strict=True):
            stop = b + int(self.question_lens[q])
            seen = self.pairs.get((dataset, q, d))
            if seen is None:
                self.pairs[(dataset, q, d)] = Candidate(n, a, stop)
            else:
                seen.windows, seen.start, seen.stop = seen.windows + n, min(seen.start, a), max(seen.stop, stop)

    def by_question(self) -> dict[int, list[tuple[int, int, int]]]:
        """Each question's candidates, most shared windows first (then corpus order), at most KEEP."""
        grouped: dict[int, list[tuple[int, int, int]]] = {}
        for key in sorted(self.pairs, key=lambda k: (k[1], -self.pairs[k].windows, k[0], k[2])):
            kept = grouped.setdefault(key[1], [])
            if len(kept) < KEEP:
                kept.append(key)
        return grouped


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def scan(grams: QuestionGrams, corpora: list[Path], sizes: list[int], candidates: Candidates, workers: int,
         progress: Callable[[int], None]) -> int:
    """Every range of every corpus through the workers into `candidates`; returns the tokens scanned."""
    scanned = 0
    for dataset, count, hits in scan_hits(grams, ranges(corpora, sizes), workers):
        candidates.add(dataset, hits)
        scanned += count
        progress(count)
    return scanned
