"""Token n-grams as 64-bit polynomial hashes, for the eval questions (a small set) and for a training corpus (a
stream of any length scanned a slice at a time). One numpy pass per token of the window: after pass j every
position holds the hash of the j-gram starting there, so the short questions' whole-question windows come out
of the same passes as the n-grams, never a Python loop per token.

A bitmap of 2**FILTER_BITS bits (16 MiB) indexed by each hash's high bits rules out almost every corpus position
in one gather (CMExam val's 745,000 distinct 13-grams set 0.6% of it); the survivors — mostly real matches of
stock phrases, ~1.6% of Chinese medical text with Llama-2's tokenizer, whose byte tokens make 13 tokens four to
six characters — are looked up exactly in the sorted question hashes, in sorted order (numpy's binary search
starts each key where the last one ended)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASE = np.uint64(0x9E3779B97F4A7C15)
"""Odd, so that every token id moves every high bit of the hash."""
FILTER_BITS = 27
SLICE_TOKENS = 1 << 18
"""Windows hashed per numpy pass: the working arrays (2 MiB each) stay in the CPU's cache (~40M tokens/s per core
here, against ~34M with 4M-token slices)."""


def window_hashes(x: np.ndarray, count: int, lengths: tuple[int, ...], out: np.ndarray | None = None):
    """(length, hashes of the `count` windows of that length starting at x[0], x[1], ...) for each of `lengths`
    in increasing order; x (uint64) holds at least count + max(lengths) - 1 ids. The yielded array is reused by
    the next length: use it before asking for the next."""
    h = out[:count] if out is not None else np.empty(count, dtype=np.uint64)
    np.copyto(h, x[:count])
    with np.errstate(over="ignore"):
        for j in range(1, max(lengths) + 1):
            if j > 1:
                np.multiply(h, BASE, out=h)
                np.add(h, x[j - 1:j - 1 + count], out=h)
            if j in lengths:
                yield j, h


def filter_slots(hashes: np.ndarray) -> np.ndarray:
    return (hashes >> np.uint64(64 - FILTER_BITS)).astype(np.intp)


def packed_filter(hashes: np.ndarray) -> np.ndarray:
    slots = filter_slots(hashes)
    bitmap = np.zeros(1 << (FILTER_BITS - 3), dtype=np.uint8)
    np.bitwise_or.at(bitmap, slots >> 3, (1 << (slots & 7)).astype(np.uint8))
    return bitmap


def maybe_present(bitmap: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Positions whose hash may be a question's (the bitmap has its bit): every true one and ~0.6% others."""
    slots = filter_slots(hashes)
    return np.flatnonzero((bitmap[slots >> 3] >> (slots & 7).astype(np.uint8)) & 1)


@dataclass
class GramTable:
    """The questions' windows of one length: sorted distinct hashes and, for each, the (question, offset) pairs
    that hold it (compressed rows: entries of hashes[k] are starts[k]:starts[k + 1])."""
    length: int
    hashes: np.ndarray
    starts: np.ndarray
    question: np.ndarray
    offset: np.ndarray

    @classmethod
    def build(cls, length: int, question: np.ndarray, offset: np.ndarray, hashes: np.ndarray) -> GramTable:
        order = np.argsort(hashes, kind="stable")
        hashes, question, offset = hashes[order], question[order], offset[order]
        distinct, first = np.unique(hashes, return_index=True)
        starts = np.append(first, len(hashes)).astype(np.int64)
        return cls(length, distinct, starts, question.astype(np.int32), offset.astype(np.int32))

    def entries(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For hits on distinct hashes `keys`: (which hit, question, offset) for every question holding it."""
        lo, hi = self.starts[keys], self.starts[keys + 1]
        counts = hi - lo
        hit = np.repeat(np.arange(len(keys)), counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        at = lo[hit] + within
        return hit, self.question[at], self.offset[at]


@dataclass
class QuestionGrams:
    """Every question's n-grams (and the whole of each question shorter than n), ready to scan a corpus with."""
    n: int
    tables: dict[int, GramTable]
    bitmap: np.ndarray

    @classmethod
    def build(cls, questions: list[np.ndarray], n: int) -> QuestionGrams:
        by_length: dict[int, tuple[list, list, list]] = {}
        for q, ids in enumerate(questions):
            length = min(n, len(ids))
            if length == 0:
                continue
            count = len(ids) - length + 1
            _, h = next(window_hashes(np.asarray(ids, dtype=np.uint64), count, (length,)))
            qs, offs, hs = by_length.setdefault(length, ([], [], []))
            qs.append(np.full(count, q))
            offs.append(np.arange(count))
            hs.append(h.copy())
        tables = {length: GramTable.build(length, np.concatenate(qs), np.concatenate(offs), np.concatenate(hs))
                  for length, (qs, offs, hs) in sorted(by_length.items())}
        every = [t.hashes for t in tables.values()]
        return cls(n, tables, packed_filter(np.concatenate(every) if every else np.empty(0, np.uint64)))

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(self.tables)

    def hits(self, tokens: np.ndarray, start: int, stop: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Windows starting at tokens[start:stop] that equal a question window: per length, (corpus positions,
        distinct-hash index into that length's table). Windows may run past `stop` (not past the tokens)."""
        found: dict[int, tuple[list, list]] = {length: ([], []) for length in self.tables}
        longest = max(self.tables, default=1)
        buffer = np.empty(SLICE_TOKENS + longest, dtype=np.uint64)
        hashes = np.empty(SLICE_TOKENS, dtype=np.uint64)
        for a in range(start, stop, SLICE_TOKENS):
            b = min(a + SLICE_TOKENS, stop)
            x = buffer[:b - a + longest - 1]
            real = min(len(x), len(tokens) - a)
            np.copyto(x[:real], tokens[a:a + real], casting="unsafe")
            x[real:] = 0  # past the corpus's end: those windows are dropped below
            for length, h in window_hashes(x, b - a, self.lengths, out=hashes):
                count = min(b - a, real - length + 1)
                if count <= 0:
                    continue
                maybe = maybe_present(self.bitmap, h[:count])
                maybe = maybe[np.argsort(h[maybe])]
                table = self.tables[length]
                k = np.minimum(np.searchsorted(table.hashes, h[maybe]), len(table.hashes) - 1)
                same = table.hashes[k] == h[maybe]
                found[length][0].append(maybe[same] + a)
                found[length][1].append(k[same])
        return {length: (np.concatenate(p).astype(np.int64) if p else np.empty(0, np.int64),
                         np.concatenate(k).astype(np.int64) if k else np.empty(0, np.int64))
                for length, (p, k) in found.items()}
