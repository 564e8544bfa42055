"""Checkpoints through DeepSpeed's save_checkpoint, plus what exact resume and verification need beside them.

    checkpoints/step_000750/   DeepSpeed's ZeRO-3 shards (every rank writes its own)
        trainer_state.json     step, epoch, samples seen, precision, recipe, data manifest hash
        rng_rank{R}.pt         torch RNG state of rank R (the data order is derived from the seed)
        config.json            the Hugging Face config, so `medtrain export` needs nothing else
        manifest.json          size and CRC-32 of every file above, each read back by the rank that wrote it
        COMPLETE               written last, by rank 0, after every rank's files are in the manifest

A COMPLETE marker says the save finished; the manifest says the bytes are still the ones written. A shard cut
short by a full disk or a dying node, or damaged later, fails verification and is skipped for the newest good
checkpoint instead of ending `--resume` in a torch zip-archive traceback. Older checkpoints are pruned only once
a newer one has verified.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from medtrain.core.checkpoint_files import (
    MANIFEST,
    MARKER,
    CheckpointError,
    checkpoint_dirs,
    size_and_crc32,
    survey,
    tag_for,
    verify,
    writer_of,
)
from medtrain.core.disk import DiskFullError, free_bytes, is_disk_full, mount_of
from medtrain.core.log import get_logger, log_rank_zero
from medtrain.core.publish import publish_json
from medtrain.train.reshard import load_resharded, written_world_size
from medtrain.train.state import TrainerState

log = get_logger(__name__)


def save(engine, root: Path, state: TrainerState, hf_config_writer, keep: int) -> Path:
    step = state.step
    tag = tag_for(step)
    rank, world = dist.get_rank(), dist.get_world_size()
    path = root / tag
    if rank == 0 and path.exists():  # a stale save of this step (a damaged one, or one cut short): start clean
        shutil.rmtree(path)
    dist.barrier()
    try:
        engine.save_checkpoint(str(root), tag=tag, client_state={"medtrain_step": step})
        torch.save({"torch": torch.get_rng_state()}, path / f"rng_rank{rank}.pt")  # the order needs no other RNG
        mine = {f.name: {**size_and_crc32(f), "rank": rank} for f in sorted(path.iterdir())
                if f.is_file() and writer_of(f.name) == rank and f.name != MARKER}
    except (OSError, RuntimeError) as e:
        raise _explain_save_failure(e, path) from e
    written: list[dict] = [{} for _ in range(world)]
    dist.all_gather_object(written, mine)
    if rank == 0:
        try:
            (path / "trainer_state.json").write_text(state.to_json(), encoding="utf-8")
            hf_config_writer(path)
            files = {k: v for w in written for k, v in w.items()}
            for name in ("trainer_state.json", "config.json"):
                files[name] = {**size_and_crc32(path / name), "rank": 0}
            publish_json(path / MANIFEST, {"step": step, "world_size": world, "files": files})
            verdict = verify(path, deep=False, marker=False)  # the bytes were read back by each writer
            if verdict.state != "complete":
                raise CheckpointError(f"{path} did not verify after saving: {verdict.reason}")
            (path / MARKER).write_text(f"{step}\n")
        except OSError as e:
            raise _explain_save_failure(e, path) from e
        _prune(root, keep)
    dist.barrier()
    return path


def _explain_save_failure(e: Exception, path: Path) -> Exception:
    """ENOSPC surfaces as an OSError or as torch's "PytorchStreamWriter failed writing file": name the disk."""
    full = is_disk_full(e)
    if not full:
        try:
            full = free_bytes(path.parent) < (1 << 20)
        except OSError:
            full = False
    if not full:
        return e
    shutil.rmtree(path, ignore_errors=True)  # this save's partial files: the space the rest of the run needs
    mount = mount_of(path.parent)
    usage = shutil.disk_usage(mount)
    return DiskFullError(f"no space left on {mount} ({usage.total / 2**30:.2f} GiB, "
                         f"{usage.free / 2**20:.1f} MiB free) while saving {path} (removed); the previous checkpoint "
                         "is intact. Free space or set output_dir on a larger filesystem, then run again with --resume")


def _prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` verified checkpoints; called only after the newest has verified."""
    if keep <= 0:
        return
    good = [v.path for v in survey(root, deep=False) if v.usable]
    for old in good[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def pick_for_resume(root: Path) -> Path | None:
    """All ranks together: the newest checkpoint whose every file verifies. Each rank reads back only the files
    of its share (rank r checks the writers r, r + W, ...), so the check costs what one save cost."""
    rank, world = dist.get_rank(), dist.get_world_size()
    for path in reversed(checkpoint_dirs(root)):
        if not (path / MARKER).is_file():
            log_rank_zero(log, f"warning: ignoring incomplete checkpoint {path} (no {MARKER} marker: the run died "
                          "while saving)", logging.WARNING)
            continue
        verdict = verify(path, mine=lambda writer: writer % world == rank, marker=False)  # marker seen above
        problems: list[str] = [""] * world
        dist.all_gather_object(problems, verdict.reason if not verdict.usable else "")
        bad = [p for p in problems if p]
        if not bad:
            return path
        log_rank_zero(log, f"warning: checkpoint {path} is damaged ({bad[0]}); trying the one before", logging.WARNING)
    return None


def load(engine, path: Path, precision: str) -> TrainerState:
    """Restore engine, schedule and RNG; a checkpoint written by another world size is re-split
    (medtrain/train/reshard.py) instead of refused."""
    state = TrainerState.read(path)
    if state.precision != precision:
        raise CheckpointError(
            f"{path} was written in {state.precision}, this run is {precision}: DeepSpeed names the "
            f"optimizer shards by precision family; resume with precision={state.precision} or start fresh"
        )
    written, rank = written_world_size(path), dist.get_rank()
    if written != dist.get_world_size():
        load_resharded(engine, path)
    else:
        load_path, _ = engine.load_checkpoint(str(path.parent), tag=path.name, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if load_path is None:
            raise CheckpointError(f"DeepSpeed could not load {path}; its shards are missing")
    rng_file = path / f"rng_rank{rank if rank < written else 0}.pt"
    torch.set_rng_state(torch.load(rng_file, weights_only=True)["torch"])
    return state
