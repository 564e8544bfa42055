"""What a run knows about itself at a step, shared by checkpoints, export and lineage: one versioned record
(trainer_state.json in every checkpoint) instead of a dict read back by string keys."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtrain.core.errors import UserError

VERSION = 1


class StateError(UserError):
    """A trainer_state.json that is missing, unreadable or from a newer medtrain."""


@dataclass(frozen=True)
class TrainerState:
    step: int
    epoch: int
    samples_seen: int
    total_steps: int
    stage: str
    precision: str
    recipe: dict[str, Any]
    """The recipe as trained (overrides applied), so lineage and export need nothing else."""
    tokenizer_dir: str
    data_manifest_sha256: str
    vocab_size: int
    bos_id: int | None
    eos_id: int
    pad_id: int | None
    world_size: int
    template: dict[str, Any] | None = None
    """The SFT prompt template the data was rendered with (eval renders prompts with the same one)."""
    version: int = VERSION

    @property
    def pad_or_eos(self) -> int:
        return self.eos_id if self.pad_id is None else self.pad_id

    def at(self, step: int, steps_per_epoch: int, global_batch: int) -> TrainerState:
        return dataclasses.replace(self, step=step, epoch=step // steps_per_epoch, samples_seen=step * global_batch)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def read(cls, checkpoint: Path) -> TrainerState:
        path = Path(checkpoint) / "trainer_state.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StateError(f"{path}: missing; the checkpoint is incomplete, use an earlier one") from None
        except json.JSONDecodeError as e:
            raise StateError(f"{path}: not valid JSON ({e.msg}); the checkpoint is damaged, use an earlier one") \
                from None
        version = raw.setdefault("version", VERSION)  # written before versions were recorded: the same layout
        if version > VERSION:
            raise StateError(f"{path}: trainer state version {version} is newer than this medtrain's ({VERSION}); "
                             "upgrade medtrain")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as e:
            raise StateError(f"{path}: {e}; the checkpoint is damaged, use an earlier one") from None
