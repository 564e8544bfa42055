"""Training samples over a prepared dataset, and the deterministic order they are seen in.

Continual: `packed` cuts the global token stream into seq_len blocks (documents may span blocks; only the final
partial block, fewer than seq_len tokens of the whole dataset, is dropped), or `per_document` gives one document
per sample, truncated to seq_len. SFT: one example per sample with its prompt length. `documents` (continual and
SFT) puts several whole documents in each seq_len row, in the dataset's order (next fit: a document that does not
fit in the row's room starts the next row), each truncated to seq_len as per_document does; the row keeps their
lengths, so positions restart and attention stays inside each document (medtrain/train/attention.py).
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
    doc_lens: np.ndarray | None = None
    """A row of packed documents: each document's length, in order (None: the sample is one document or block)."""
    prompt_lens: np.ndarray | None = None
    """A row of packed SFT examples: each one's prompt length."""


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


def pack_rows(lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """Row boundaries over documents (truncated to seq_len) packed in order by next fit: row r holds documents
    bounds[r]:bounds[r + 1]. A function of the lengths alone, so every rank and every restart packs alike."""
    lengths = np.minimum(lengths, seq_len)
    bounds, room = [0], seq_len
    for i, n in enumerate(lengths.tolist()):
        if n > room:
            bounds.append(i)
            room = seq_len
        room -= n
    if bounds[-1] != len(lengths):
        bounds.append(len(lengths))
    return np.asarray(bounds, dtype=np.int64)


class DocumentRows(Samples):
    """`packing: documents`: rows of whole documents (SFT examples with their prompt masks)."""

    def __init__(self, data: TokenDataset, seq_len: int):
        super().__init__(data, seq_len)
        self.lengths = np.minimum(data.doc_lengths(), seq_len)
        self.bounds = pack_rows(data.doc_lengths(), seq_len)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(i)
        docs = range(int(self.bounds[i]), int(self.bounds[i + 1]))
        lens = self.lengths[docs.start:docs.stop]
        ids = np.concatenate([np.asarray(self.data[d][:n], dtype=np.int64) for d, n in zip(docs, lens, strict=True)])
        prompts = None
        if self.data.prompt_lens is not None:
            prompts = np.minimum(np.asarray(self.data.prompt_lens[docs.start:docs.stop], dtype=np.int64), lens)
        return Sample(ids, doc_lens=lens, prompt_lens=prompts)

    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def documents_per_row(self) -> float:
        return len(self.lengths) / max(len(self), 1)


def open_samples(path: str | Path, stage: str, seq_len: int, packing: str = "packed",
                 tokenizer: TokenizerId | None = None) -> Samples:
    data = TokenDataset(path, expect_tokenizer=tokenizer)
    if stage == "sft" and data.kind != "sft":
        raise DatasetError(f"{path}: a {data.kind} dataset, but the recipe's stage is sft; prep it with "
                           "`medtrain prep cmexam` (or medqa/medmcqa)")
    if stage != "sft" and data.kind != "continual":
        raise DatasetError(f"{path}: an {data.kind} dataset, but the recipe's stage is continual")
    if packing == "documents":
        return DocumentRows(data, seq_len)
    if stage == "sft":
        return SftSamples(data, seq_len)
    return PackedSamples(data, seq_len) if packing == "packed" else DocumentSamples(data, seq_len)


def count_samples(path: str | Path, stage: str, seq_len: int, packing: str = "packed") -> tuple[int, int, int]:
    """(samples per epoch, tokens per epoch, documents per epoch when samples are rows of packed documents, else
    0) exactly as the trainer will see them."""
    samples = open_samples(path, stage, seq_len, packing)
    return len(samples), samples.num_tokens(), packed_documents(samples)


def packed_documents(samples: Samples) -> int:
    """Documents per epoch when samples are rows of packed documents, else 0."""
    return len(samples.data) if isinstance(samples, DocumentRows) else 0


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of sample ids that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)
