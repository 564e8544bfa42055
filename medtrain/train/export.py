"""`medtrain export`: ZeRO-3 shards of a checkpoint -> a Hugging Face directory, offline, on one process."""

from __future__ import annotations

from pathlib import Path

from medtrain.core.checkpoint_files import MARKER, CheckpointError, newest_good, verify
from medtrain.train.model_dir import write_hf_dir
from medtrain.train.state import TrainerState


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory (verified against its manifest), or a run/checkpoints directory (its newest
    checkpoint that verifies; damaged ones are reported and skipped)."""
    path = Path(path)
    if (path / MARKER).is_file():
        verdict = verify(path)
        if not verdict.usable:
            raise CheckpointError(f"{path} is damaged: {verdict.reason}; export an older checkpoint (`medtrain "
                                  "checkpoints RUN_DIR` lists them)")
        return path
    for root in (path, path / "checkpoints"):
        newest = newest_good(root, deep=True, say_skipped=True)
        if newest is not None:
            return newest
    raise CheckpointError(f"{path}: no complete checkpoint (a step_* directory with a {MARKER} marker)")


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """DeepSpeed's zero_to_fp32 gives the fp32 masters; they are cast to the training dtype."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt = resolve_checkpoint(checkpoint)
    state = TrainerState.read(ckpt)
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(ckpt.parent), tag=ckpt.name)
    return write_hf_dir(state_dict, ckpt, state, out)
