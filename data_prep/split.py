"""A held-out validation split of a prepared dataset, chosen by document: a document is held out when a hash of
its token ids falls below the fraction, so the choice does not depend on the order, the chunking or the number
of workers that prepared it, and a document that occurs twice lands on one side only (no leak between them).

The training documents become the dataset at OUT and the held-out ones a dataset at OUT/val (recipes read it as
`val_data: OUT/val`); both manifests record the split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from medtrain.data_prep.format import DatasetError, DatasetWriter, TokenDataset, read_manifest

VAL_DIR = "val"
BLOCK_DOCS = 8192


def held_out(data: TokenDataset, fraction: float) -> np.ndarray:
    """A boolean per document: held out for validation (at least one document when fraction > 0)."""
    keys = np.fromiter((int.from_bytes(hashlib.blake2b(np.asarray(data[i]).tobytes(), digest_size=8).digest(),
                                       "little") for i in range(len(data))), dtype=np.uint64, count=len(data))
    chosen = keys < np.uint64(min(fraction, 1.0) * float(2**64 - 1))
    if fraction > 0 and not chosen.any() and len(data) > 1:
        chosen[int(np.argmin(keys))] = True
    return chosen


def split_validation(full: Path, out: Path, fraction: float, overwrite: bool = False) -> dict:
    """Write `full`'s documents into OUT (training) and OUT/val (held out); returns the training manifest."""
    if not 0 < fraction < 0.5:
        raise DatasetError(f"--val-fraction {fraction} must be above 0 and below 0.5 (the paper's recipe keeps 0.005)")
    data = TokenDataset(full)
    val = held_out(data, fraction)
    if val.all() or not val.any():
        raise DatasetError(f"{full}: {len(data)} documents cannot be split {fraction:.3%} held out; prepare more data")
    vocab = data.manifest["tokenizer"]["vocab_size"]
    sft = data.kind == "sft"
    split = {"fraction": fraction, "method": "blake2b of each document's token ids < fraction",
             "train_docs": int((~val).sum()), "val_docs": int(val.sum())}
    train = DatasetWriter(out, vocab, sft=sft)
    try:
        held = DatasetWriter(train.tmp / VAL_DIR, vocab, sft=sft)
        for writer, keep in ((train, ~val), (held, val)):
            _copy(data, keep, writer)
        base = {k: v for k, v in data.manifest.items() if k not in ("num_docs", "num_tokens", "dtype", "format")}
        held.finalize({**base, "split": {**split, "side": "validation"}})
    except BaseException:
        train.abort()
        raise
    train.finalize({**base, "split": {**split, "side": "train", "val_data": str(Path(out) / VAL_DIR)}},
                   overwrite=overwrite)
    return read_manifest(out)


def _copy(data: TokenDataset, keep: np.ndarray, writer: DatasetWriter) -> None:
    """The kept documents, a block at a time (a billion tokens never sit in memory at once)."""
    lengths = np.diff(data.offsets)
    for start in range(0, len(data), BLOCK_DOCS):
        idx = np.flatnonzero(keep[start:start + BLOCK_DOCS]) + start
        if not idx.size:
            continue
        flat = np.concatenate([np.asarray(data[int(i)]) for i in idx])
        writer.add_many(flat, lengths[idx], data.prompt_lens[idx] if data.prompt_lens is not None else None)
