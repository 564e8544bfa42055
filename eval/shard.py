"""Evaluation spread over the ranks of a launch: each rank takes whole batches of the single-process run (batch
k goes to rank k mod W), so every batch is computed exactly as one process would compute it and the gathered
results are identical to a single-process run, question by question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @classmethod
    def of_process_group(cls) -> Shard:
        import torch.distributed as dist

        if not dist.is_initialized():
            return cls()
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def takes(self, batch_index: int) -> bool:
        return batch_index % self.world == self.rank

    def gather(self, local: dict[int, Any]) -> dict[int, Any]:
        """Every rank's {index: result}, merged (on every rank)."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        parts: list = [None] * self.world
        dist.all_gather_object(parts, local)
        merged: dict[int, Any] = {}
        for part in parts:
            merged.update(part)
        return merged

    def smallest(self, value: int) -> int:
        """The same number on every rank (an auto batch size sized to each rank's free memory)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        return min(values)


ONE = Shard()
"""A single process: every batch is this process's."""
