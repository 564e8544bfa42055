"""The run spec: the batch and step arithmetic of a recipe on a world size, computed once.

`medtrain launch` computes it (with the prepared data's size), writes `run_spec.json` beside `recipe.yaml`, and
every rank reads it back: `plan`, `--dry-run`, the DeepSpeed JSON and the trainer's loop all see the same
accumulation, step count, warmup and schedule, from the one function below that divides a batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtrain.core.ds_config import build_ds_config
from medtrain.core.errors import UserError
from medtrain.core.publish import publish_json
from medtrain.core.recipe import Recipe, RecipeError

FORMAT = "medtrain.run_spec/1"


class RunSpecError(UserError):
    """A run_spec.json that is missing, from another format, or disagrees with the run it is read by."""


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int, source: str = "<recipe>") -> int:
    """Gradient accumulation for a world size; the batch equation in the error when it does not divide."""
    per_step = micro_batch * world_size
    if micro_batch <= 0 or world_size <= 0 or global_batch % per_step:
        raise RecipeError(
            f"{source}: global_batch={global_batch} is not divisible by micro_batch={micro_batch} x "
            f"world_size={world_size} = {per_step}; pick a global_batch that is a multiple of {per_step} or change "
            "micro_batch/hosts"
        )
    return global_batch // per_step


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    """The last step of an epoch is topped up with ghost slots, never dropped."""
    return math.ceil(num_samples / global_batch)


LOSS_CHUNK_TOKENS = 1024
"""Positions per chunk of the loss (medtrain.train.loss.ChunkedCrossEntropy), which `plan` sizes the loss by: at
Llama-2's 32,000-entry vocabulary one chunk's fp32 upcast is 131 MB, where a whole 4,096-token sequence's would
be 524 MB (and its softmax as much again)."""


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(warmup_ratio * total_steps)


@dataclass(frozen=True)
class DataSize:
    samples: int
    """Samples per epoch as the trainer sees them (packed blocks or documents)."""
    tokens: int
    """Tokens per epoch (for the time estimate and the tokens/s the plan expects)."""
    source: str
    """Where the counts came from: the prepared dataset, or the recipe's expected_* figures."""
    documents: int = 0
    """Documents per epoch when samples are rows of packed documents (`packing: documents`); 0 otherwise."""

    def packing_line(self, steps_per_epoch: int) -> str:
        """Rows, documents per row and tokens per step, for `plan` and the launch's first lines ('' unpacked)."""
        if not self.documents:
            return ""
        return (f"{self.samples:,} rows of {self.documents / max(self.samples, 1):.1f} documents on average "
                f"({self.documents:,} documents), {self.tokens / max(steps_per_epoch, 1):,.0f} tokens per step")


@dataclass(frozen=True)
class RunSpec:
    stage: str
    world_size: int
    global_batch: int
    micro_batch: int
    accumulation: int
    data: DataSize
    steps_per_epoch: int
    epochs: int
    schedule_steps: int
    """Steps of the full run (epochs x steps per epoch): the lr schedule and its warmup span these."""
    total_steps: int
    """Steps this launch trains: schedule_steps, or fewer when the recipe's max_steps stops it early."""
    warmup: int
    seed: int
    ds_config: dict[str, Any]
    """The DeepSpeed JSON: only what the engine uses (batch triple, buckets, precision, clipping)."""
    schedule: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The lr schedule the trainer runs: type, peak lr, warmup and schedule steps."""

    @classmethod
    def compute(cls, recipe: Recipe, world_size: int, data: DataSize, hidden_size: int,
                preset: str | None = None) -> RunSpec:
        accumulation = accumulation_steps(recipe.global_batch, recipe.micro_batch, world_size, recipe.source)
        per_epoch = steps_per_epoch(data.samples, recipe.global_batch)
        schedule = per_epoch * recipe.epochs
        total = min(schedule, recipe.max_steps) if recipe.max_steps else schedule
        warmup = warmup_steps(schedule, recipe.warmup_ratio)
        ds_config = build_ds_config(preset=preset or recipe.preset, precision=recipe.precision,
                                    micro_batch=recipe.micro_batch, accumulation=accumulation,
                                    world_size=world_size, hidden_size=hidden_size,
                                    max_grad_norm=recipe.max_grad_norm, steps_per_print=max(recipe.log_every, 10))
        lr_schedule = {"type": recipe.lr_schedule, "lr": recipe.lr, "warmup_steps": warmup, "schedule_steps": schedule}
        return cls(stage=recipe.stage, world_size=world_size, global_batch=recipe.global_batch,
                   micro_batch=recipe.micro_batch, accumulation=accumulation, data=data, steps_per_epoch=per_epoch,
                   epochs=recipe.epochs, schedule_steps=schedule, total_steps=total, warmup=warmup, seed=recipe.seed,
                   ds_config=ds_config, schedule=lr_schedule)

    def batch_equation(self) -> str:
        return (f"{self.micro_batch} micro x {self.accumulation} accum x {self.world_size} ranks = "
                f"{self.micro_batch * self.accumulation * self.world_size}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    def write(self, path: Path) -> Path:
        return publish_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> RunSpec:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunSpecError(f"{path}: no run spec; `medtrain launch` writes one into the run directory") from None
        except json.JSONDecodeError as e:
            raise RunSpecError(f"{path}: not valid JSON ({e.msg}); launch the run again to rewrite it") from None
        if raw.pop("format", None) != FORMAT:
            raise RunSpecError(f"{path}: not a {FORMAT} file; launch the run again to rewrite it")
        try:
            return cls(**{**raw, "data": DataSize(**raw["data"])})
        except (KeyError, TypeError) as e:
            raise RunSpecError(f"{path}: malformed run spec ({e}); launch the run again to rewrite it") from None

    def check_matches(self, world_size: int, num_samples: int, where: str) -> None:
        """The ranks' view must be the launch's: a different world or a dataset changed since launch is refused."""
        if world_size != self.world_size:
            raise RunSpecError(f"{where}: planned for {self.world_size} ranks, started on {world_size}; launch it "
                               "again with `medtrain launch` so the batch split is recomputed")
        if num_samples != self.data.samples:
            raise RunSpecError(f"{where}: planned for {self.data.samples:,} samples per epoch, the data now has "
                               f"{num_samples:,}; the dataset changed since launch, launch again")
