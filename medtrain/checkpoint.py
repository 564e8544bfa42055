"""Checkpoints through DeepSpeed's save_checkpoint, plus what exact resume needs beside them.

    checkpoints/step_000750/   DeepSpeed's ZeRO-3 shards (every rank writes its own)
        trainer_state.json     step, epoch, samples seen, precision, recipe, data manifest hash
        rng_rank{R}.pt         torch RNG state of rank R (the data order is derived from the seed)
        config.json            the Hugging Face config, so `medtrain export` needs nothing else
        COMPLETE               written last, by rank 0, after every rank has saved
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from core.errors import UserError
from medtrain.state import TrainerState

MARKER = "COMPLETE"


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed or exported; says why and what to do."""


def tag_for(step: int) -> str:
    return f"step_{step:06d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first; incomplete ones are reported and ignored."""
    if not root.is_dir():
        return []
    done, partial = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")):
        (done if (d / MARKER).is_file() else partial).append(d)
    for d in partial:
        warnings.warn(f"ignoring incomplete checkpoint {d} (no {MARKER} marker: the run died while saving)",
                      stacklevel=2)
    return done


def save(engine, root: Path, state: TrainerState, hf_config_writer, keep: int) -> Path:
    step = state.step
    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag, client_state={"medtrain_step": step})
    rank = dist.get_rank()
    path = root / tag
    torch.save({"torch": torch.get_rng_state()}, path / f"rng_rank{rank}.pt")  # the order needs no other RNG
    dist.barrier()
    if rank == 0:
        (path / "trainer_state.json").write_text(state.to_json(), encoding="utf-8")
        hf_config_writer(path)
        (path / MARKER).write_text(f"{step}\n")
        _prune(root, keep)
    dist.barrier()
    return path


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    done = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / MARKER).is_file()]
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load(engine, path: Path, precision: str) -> TrainerState:
    state = TrainerState.read(path)
    if state.precision != precision:
        raise CheckpointError(
            f"{path} was written in {state.precision}, this run is {precision}: DeepSpeed names the "
            f"optimizer shards by precision family; resume with precision={state.precision} or start fresh"
        )
    load_path, _ = engine.load_checkpoint(str(path.parent), tag=path.name, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise CheckpointError(f"DeepSpeed could not load {path}; its shards are missing or were written by "
                              "another world size")
    rng = torch.load(path / f"rng_rank{dist.get_rank()}.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    return state
