"""Which samples each rank sees at each step, and how they become tensors.

The global order of an epoch depends only on (seed, epoch) (data_prep.reader.epoch_order). Step s of an epoch
takes the next global_batch ids; micro-batch m of rank r takes ids[(m*W + r)*micro : ...]. So every sample is
seen exactly once per epoch across ranks, the position is just the step number, and a restart or a different
world size walks the same order. The last step of an epoch is topped up with "ghost" slots (-1) that carry no
loss, instead of repeating or dropping samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medtrain.core.run_spec import RunSpec, accumulation_steps, steps_per_epoch
from medtrain.data_prep.reader import Samples, epoch_order

IGNORE = -100


@dataclass
class StepPlan:
    num_samples: int
    global_batch: int
    micro_batch: int
    world_size: int
    seed: int

    @classmethod
    def of(cls, spec: RunSpec) -> StepPlan:
        return cls(spec.data.samples, spec.global_batch, spec.micro_batch, spec.world_size, spec.seed)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.num_samples, self.global_batch)

    @property
    def accumulation(self) -> int:
        return accumulation_steps(self.global_batch, self.micro_batch, self.world_size)

    def step_ids(self, step: int) -> np.ndarray:
        """Global sample ids of optimizer step `step` (0-based over the whole run), -1 for ghost slots."""
        epoch, s = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.num_samples, self.seed, epoch)
        ids = order[s * self.global_batch:(s + 1) * self.global_batch]
        return np.concatenate([ids, np.full(self.global_batch - len(ids), -1, dtype=np.int64)])

    def micro_ids(self, step: int, rank: int) -> list[np.ndarray]:
        ids = self.step_ids(step)
        mb, w = self.micro_batch, self.world_size
        return [ids[(m * w + rank) * mb:(m * w + rank + 1) * mb] for m in range(self.accumulation)]


def collate(samples: Samples, ids: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sample of this micro-batch; prompt, padding and ghost slots get label -100. Rows of
    packed documents also get position ids restarting at each document, and each document's first token gets
    label -100 too: it is never a target, as it is not when the document is a sample of its own."""
    rows = [samples[int(i)] if i >= 0 else None for i in ids]
    if any(r is not None and r.doc_lens is not None for r in rows):
        return collate_rows(rows, pad_id)
    batch = _padded(rows, pad_id)
    for k, row in enumerate(rows):
        if row is not None:
            batch["labels"][k, :row.prompt_len] = IGNORE
    return batch


def collate_rows(rows: list, pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of packed documents (data_prep.reader.DocumentRows). Padding after a row's last document is a
    segment of its own (positions from 0, no loss), so attention inside documents never meets it."""
    batch = _padded(rows, pad_id)
    length = batch["input_ids"].shape[1]
    positions = torch.arange(length, dtype=torch.long).repeat(len(rows), 1)
    for k, row in enumerate(rows):
        if row is None:
            continue
        starts = np.concatenate([[0], np.cumsum(row.doc_lens)[:-1]])
        prompts = row.prompt_lens if row.prompt_lens is not None else np.ones(len(starts), dtype=np.int64)
        for start, doc_len, prompt in zip(starts.tolist(), row.doc_lens.tolist(), prompts.tolist(), strict=True):
            positions[k, start:start + doc_len] = torch.arange(doc_len)
            batch["labels"][k, start:start + max(prompt, 1)] = IGNORE
        n = len(row.input_ids)
        positions[k, n:] = torch.arange(length - n)
    return {**batch, "position_ids": positions}


def _padded(rows: list, pad_id: int) -> dict[str, torch.Tensor]:
    """The rows right-padded to the longest: ids, attention mask, and labels equal to the ids where there is a
    token (-100 on padding and ghost slots); the callers mask what else carries no loss."""
    length = max((len(r.input_ids) for r in rows if r is not None), default=1)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for k, row in enumerate(rows):
        if row is not None:
            input_ids[k, :len(row.input_ids)] = torch.from_numpy(row.input_ids)
            attention[k, :len(row.input_ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention,
            "labels": input_ids.masked_fill(attention == 0, IGNORE)}
