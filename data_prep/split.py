"""A held-out validation split, chosen by document as prep writes: a document is held out when a hash of its
token ids falls below the fraction, so the choice does not depend on the order, the chunking or the number of
workers that prepared it, and a document that occurs twice lands on one side only (no leak between them).

The training documents become the dataset at OUT and the held-out ones a dataset at OUT/val (recipes read it as
`val_data: OUT/val`); both manifests record the split. Each document is routed as its chunk arrives, so every
token is written once, to its side.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from medtrain.data_prep.format import DatasetError, DatasetWriter

VAL_DIR = "val"
METHOD = "blake2b of each document's token ids < fraction"


def document_keys(flat: np.ndarray, lengths: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A 64-bit hash per document of a chunk: of its ids at the dataset's stored width (`dtype`, set by the
    vocabulary), so a chunk hashes alike whether it came as int64 ids or as a worker's shard."""
    ends = np.cumsum(lengths)
    ids = flat.astype(dtype, copy=False)
    return np.fromiter((int.from_bytes(hashlib.blake2b(ids[end - n:end].tobytes(), digest_size=8).digest(), "little")
                        for n, end in zip(lengths, ends, strict=True)), dtype=np.uint64, count=len(lengths))


def check_fraction(fraction: float) -> None:
    if not 0 < fraction < 0.5:
        raise DatasetError(f"--val-fraction {fraction} must be above 0 and below 0.5 (the paper's recipe keeps 0.005)")


class SplitWriter:
    """Stands in for prep's DatasetWriter when a fraction is held out: the same add_many / add_shard / abort /
    finalize, each document going to the training writer or the held-out one (staged inside the training
    dataset's staging, so both are published by one rename)."""

    def __init__(self, train: DatasetWriter, fraction: float):
        self.train, self.fraction = train, fraction
        self.val = DatasetWriter(train.tmp / VAL_DIR, train.vocab_size, sft=train.prompt_lens is not None)
        self._cut = np.uint64(fraction * float(2**64 - 1))
        self.tmp, self.dtype = train.tmp, train.dtype

    @property
    def num_docs(self) -> int:
        return self.train.num_docs + self.val.num_docs

    @property
    def num_tokens(self) -> int:
        return self.train.num_tokens + self.val.num_tokens

    def add_many(self, flat: np.ndarray, lengths: np.ndarray, prompt_lens: np.ndarray | None = None) -> None:
        held = document_keys(flat, lengths, self.dtype) < self._cut
        for writer, keep in ((self.train, ~held), (self.val, held)):
            if keep.any():
                writer.add_many(flat[np.repeat(keep, lengths)], lengths[keep],
                                prompt_lens[keep] if prompt_lens is not None else None)

    def add_shard(self, shard: Path, lengths: np.ndarray, prompt_lens: np.ndarray | None = None) -> None:
        flat = np.fromfile(shard, dtype=self.dtype)
        if flat.size != int(lengths.sum()):
            raise DatasetError(f"{shard}: {flat.size} tokens where {int(lengths.sum())} were written; re-run prep")
        os.remove(shard)
        self.add_many(flat, lengths, prompt_lens)

    def abort(self) -> None:
        self.val.abort()
        self.train.abort()

    def finalize(self, manifest: dict[str, Any], overwrite: bool = False) -> Path:
        if not self.val.num_docs or not self.train.num_docs:
            self.abort()
            raise DatasetError(f"{self.train.out}: {self.num_docs:,} documents cannot be split {self.fraction:.3%} "
                               f"held out ({self.val.num_docs} fell on the held-out side); prepare more data or "
                               "change --val-fraction")
        split = {"fraction": self.fraction, "method": METHOD, "train_docs": self.train.num_docs,
                 "val_docs": self.val.num_docs}
        try:
            self.val.finalize({**manifest, "split": {**split, "side": "validation"}})
        except BaseException:
            self.train.abort()
            raise
        return self.train.finalize({**manifest, "split": {**split, "side": "train",
                                                          "val_data": str(Path(self.train.out) / VAL_DIR)}},
                                   overwrite=overwrite)
