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
MERGE_AT = 1_000_000
SLACK = 32
QUESTION_BITS, START_BITS = 23, 36
"""A row's key packs dataset, question and start into one int64: up to 8.4M questions, corpora of up to 2**35
tokens (34B), 15 datasets."""
START_BIAS = 1 << 35
"""Tokens by which the hits of one copy may disagree on where the question starts (edits inside it)."""


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
    _worker["grams"], _worker["files"], _worker["offsets"] = grams, {}, {}


def _scan_range(task: tuple[int, str, int, int]) -> tuple[int, int, tuple[np.ndarray, ...]]:
    """One range of one dataset: its hits, already turned into candidate rows here in the worker, so the parent
    only gathers (it would otherwise spend half a core on what the workers can spread)."""
    dataset, root, start, stop = task
    files, offsets = _worker["files"], _worker["offsets"]
    if root not in files:
        files[root] = TokenFile(Path(root) / "tokens.npy")
        offsets[root] = np.load(Path(root) / "offsets.npy")
    tokens = files[root]
    hits = _worker["grams"].hits(tokens.tokens, start, stop)
    tokens.release(start, stop)
    return dataset, stop - start, hit_rows(_worker["grams"], offsets[root], dataset, hits)


def hit_rows(grams: QuestionGrams, offsets: np.ndarray, dataset: int, hits: dict[int, tuple[np.ndarray, np.ndarray]]
             ) -> tuple[np.ndarray, ...]:
    """Hits as rows (dataset, question, document, where the question would start, hits), one row per distinct
    first four; a window across two documents is no evidence and is dropped."""
    columns: list[tuple[np.ndarray, ...]] = []
    for length, (pos, keys) in hits.items():
        hit, question, offset = grams.tables[length].entries(keys)
        pos = pos[hit]
        doc = np.searchsorted(offsets, pos, side="right") - 1
        inside = pos + length <= offsets[doc + 1]
        n = int(inside.sum())
        columns.append((np.full(n, dataset), question[inside].astype(np.int64), doc[inside], (pos - offset)[inside],
                        np.ones(n, np.int64)))
    return fold_rows(columns)


def fold_rows(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Rows with the same (dataset, question, start) summed into one (a copy's hits share their start, and with
    it their document), sorted by that key: one int64 per row sorted, not four columns."""
    if not parts:
        return tuple(np.empty(0, np.int64) for _ in range(5))
    dataset, question, doc, start, windows = (np.concatenate(c) for c in zip(*parts, strict=True))
    key = ((dataset << QUESTION_BITS | question) << START_BITS) | (start + START_BIAS)
    order = np.argsort(key, kind="stable")
    first = np.flatnonzero(_changes(key[order]))
    folded = (c[order][first] for c in (dataset, question, doc, start))
    return (*folded, np.add.reduceat(windows[order], first) if len(first) else windows[:0])


def ranges(corpora: list[Path], sizes: list[int]) -> list[tuple[int, str, int, int]]:
    return [(d, str(path), a, min(a + RANGE_TOKENS, size))
            for d, (path, size) in enumerate(zip(corpora, sizes, strict=True)) for a in range(0, size, RANGE_TOKENS)]


def scan_hits(grams: QuestionGrams, tasks: list[tuple[int, str, int, int]], workers: int
              ) -> Iterator[tuple[int, int, tuple[np.ndarray, ...]]]:
    """(dataset, tokens scanned, candidate rows) per range, in the order they finish; in this process for one
    worker."""
    if workers <= 1:
        _start_worker(grams)
        yield from map(_scan_range, tasks)
        return
    # fork: the workers inherit the question tables instead of unpickling them, and start in milliseconds; they
    # only hash numpy arrays, never touching the parent's tokenizer (whose Rust threads are told not to warn)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with multiprocessing.get_context("fork").Pool(workers, _start_worker, (grams,)) as pool:
        yield from pool.imap_unordered(_scan_range, tasks)


@dataclass
class Candidate:
    windows: int
    start: int
    stop: int


class Candidates:
    """(dataset, question, document) -> how many question windows the document shares, and the span
    [start, stop) the question would cover in the corpus. Each hit says where the question would start
    (position - offset in the question): hits of a copy agree on it, give or take the few tokens an edit
    shifts, while a stock phrase elsewhere in a long document points anywhere. So a candidate's span and
    windows come from the cluster of starts around the best-supported one (within SLACK tokens), never from a
    stray hit. The workers turn hits into rows (hit_rows); here they wait as arrays and are folded (numpy, no
    loop per hit) once MERGE_AT of them wait; more than PRUNE_AT rows keep each question's KEEP best documents."""

    def __init__(self, question_lens: np.ndarray, offsets: list[np.ndarray]):
        self.question_lens, self.offsets = np.asarray(question_lens), offsets
        self._rows = tuple(np.empty(0, np.int64) for _ in range(5))  # dataset, question, doc, start, windows
        self._waiting: list[tuple[np.ndarray, ...]] = []
        self._pending = 0
        self._standing: dict | None = None

    def add(self, rows: tuple[np.ndarray, ...]) -> None:
        """Rows from hit_rows, gathered; folded together once MERGE_AT wait."""
        self._standing = None
        self._waiting.append(rows)
        self._pending += len(rows[0])
        if self._pending > MERGE_AT:
            self._fold()

    def _fold(self) -> None:
        self._rows = fold_rows([self._rows, *self._waiting])
        self._waiting, self._pending = [], 0
        if len(self._rows[0]) > PRUNE_AT:
            best = self._best_documents()
            self._rows = tuple(c[best] for c in self._rows)

    def _best_documents(self) -> np.ndarray:
        """The rows of each question's KEEP documents sharing the most windows (then corpus order)."""
        by_pair = np.lexsort((self._rows[3], self._rows[2], self._rows[1], self._rows[0]))
        self._rows = tuple(c[by_pair] for c in self._rows)
        dataset, question, doc, _, windows = self._rows
        pair = np.flatnonzero(_changes(dataset, question, doc))
        total = np.add.reduceat(windows, pair)
        order = np.lexsort((doc[pair], dataset[pair], -total, question[pair]))
        q = question[pair][order]
        group = np.flatnonzero(_changes(q))
        rank = np.arange(len(order)) - np.repeat(group, np.diff(np.r_[group, len(order)]))
        kept = np.zeros(len(pair), dtype=bool)
        kept[order[rank < KEEP]] = True
        return np.flatnonzero(np.repeat(kept, np.diff(np.r_[pair, len(doc)])))

    @property
    def pairs(self) -> dict[tuple[int, int, int], Candidate]:
        """The candidates standing, at most KEEP per question, most shared windows first."""
        if self._standing is None:
            self._fold()
            best = self._best_documents()
            rows = [c[best].tolist() for c in self._rows]
            clusters: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
            for d, q, k, start, n in zip(*rows, strict=True):
                clusters.setdefault((d, q, k), []).append((start, n))
            found = {key: self._cluster(key[1], starts) for key, starts in clusters.items()}
            self._standing = dict(sorted(found.items(), key=lambda kv: (kv[0][1], -kv[1].windows, kv[0][0],
                                                                         kv[0][2])))
        return self._standing

    def _cluster(self, question: int, starts: list[tuple[int, int]]) -> Candidate:
        best = max(starts, key=lambda x: (x[1], -x[0]))[0]
        near = [(s, n) for s, n in starts if abs(s - best) <= SLACK]
        return Candidate(sum(n for _, n in near), min(s for s, _ in near),
                         max(s for s, _ in near) + int(self.question_lens[question]))

    def by_question(self) -> dict[int, list[tuple[int, int, int]]]:
        grouped: dict[int, list[tuple[int, int, int]]] = {}
        for key in self.pairs:
            grouped.setdefault(key[1], []).append(key)
        return grouped


def _changes(*columns: np.ndarray) -> np.ndarray:
    """True where a sorted row's key differs from the row before (and at the first row)."""
    new = np.ones(len(columns[0]), dtype=bool)
    new[1:] = np.any([c[1:] != c[:-1] for c in columns], axis=0) if len(columns[0]) > 1 else new[1:]
    return new


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def scan(grams: QuestionGrams, corpora: list[Path], sizes: list[int], candidates: Candidates, workers: int,
         progress: Callable[[int], None]) -> int:
    """Every range of every corpus through the workers into `candidates`; returns the tokens scanned."""
    scanned = 0
    for _, count, rows in scan_hits(grams, ranges(corpora, sizes), workers):
        candidates.add(rows)
        scanned += count
        progress(count)
    return scanned
