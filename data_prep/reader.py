"""Training samples over a prepared dataset, and the deterministic order they are seen in.

Continual: `packed` cuts the global token stream into seq_len blocks (documents may span blocks; only the final
partial block, fewer than seq_len tokens of the whole dataset, is dropped), or `per_document` gives one document
per sample, truncated to seq_len. SFT: one example per sample with its prompt length, never packed.
The order of an epoch depends only on (seed, epoch): the same on a restart and for any world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtrain.data_prep.format import DatasetError, TokenDataset, TokenizerId


@dataclass
class Sample:
    input_ids: np.ndarray
    prompt_len: int = 0
    """Leading tokens that carry no loss (SFT prompt)."""


class Samples:
    """A sized, indexable view: `samples[i] -> Sample`."""

    def __init__(self, data: TokenDataset, seq_len: int):
        self.data, self.seq_len = data, seq_len

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError

    def num_tokens(self) -> int:
        raise NotImplementedError


class PackedSamples(Samples):
    def __len__(self) -> int:
        return int(self.data.offsets[-1]) // self.seq_len

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.seq_len
        return Sample(np.asarray(self.data.tokens[start:start + self.seq_len], dtype=np.int64))

    def num_tokens(self) -> int:
        return len(self) * self.seq_len


class DocumentSamples(Samples):
    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Sample:
        return Sample(np.asarray(self.data[i][: self.seq_len], dtype=np.int64))

    def num_tokens(self) -> int:
        return int(np.minimum(self.data.doc_lengths(), self.seq_len).sum())


class SftSamples(DocumentSamples):
    def __getitem__(self, i: int) -> Sample:
        ids = np.asarray(self.data[i][: self.seq_len], dtype=np.int64)
        return Sample(ids, min(int(self.data.prompt_lens[i]), len(ids)))


def open_samples(path: str | Path, stage: str, seq_len: int, packing: str = "packed",
                 tokenizer: TokenizerId | None = None) -> Samples:
    data = TokenDataset(path, expect_tokenizer=tokenizer)
    if stage == "sft":
        if data.kind != "sft":
            raise DatasetError(f"{path}: a {data.kind} dataset, but the recipe's stage is sft; prep it with "
                               "`medtrain prep cmexam` (or medqa/medmcqa)")
        return SftSamples(data, seq_len)
    if data.kind != "continual":
        raise DatasetError(f"{path}: an {data.kind} dataset, but the recipe's stage is continual")
    return PackedSamples(data, seq_len) if packing == "packed" else DocumentSamples(data, seq_len)


def count_samples(path: str | Path, stage: str, seq_len: int, packing: str = "packed") -> tuple[int, int]:
    """(samples per epoch, tokens per epoch) exactly as the trainer will see them."""
    samples = open_samples(path, stage, seq_len, packing)
    return len(samples), samples.num_tokens()


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of sample ids that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)
