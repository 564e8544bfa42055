"""Resume a ZeRO-3 checkpoint written by W ranks on W' ranks: weights, optimizer state, schedule, counters.

DeepSpeed's universal checkpoint is the first thing to try and it does not carry this run: `ds_to_universal`
on a medtrain ZeRO-3 checkpoint stops with `KeyError: 'exp_avg'` (deepspeed 0.19, checkpoint/ds_to_universal.py
reads exp_avg and exp_avg_sq by name for stage 3), and Hugging Face's Adafactor keeps `step`, `exp_avg_sq` and
`RMS`. Dropping the optimizer state silently is not an option, so it is carried here.

Under ZeRO-3 every parameter is split on its own into W equal parts (the last padded), and rank q's flat fp32
group (one per optimizer group: decay, no decay) is the concatenation of its parts in `param_shapes` order; the
base optimizer sees only those flat groups, so its per-element state (Adafactor's `exp_avg_sq`: the group is
one-dimensional, so not factored; AdamW's `exp_avg`, `exp_avg_sq`) has the same layout. Re-splitting is therefore
exact: rebuild one parameter at a time from the W old parts (memory-mapped: a rank reads only what it needs) and cut
this rank's part of W'. Scalars (`step`) are the same on every rank; Adafactor's `RMS` is recomputed at every step
before it is read.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist

from medtrain.core.checkpoint_files import CheckpointError


def load_zero_file(path: Path) -> dict:
    """weights_only, with the three DeepSpeed classes its files pickle allowed by name."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    with torch.serialization.safe_globals([LossScaler, DynamicLossScaler, ZeroStageEnum]):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def written_world_size(path: Path) -> int:
    return len(list(Path(path).glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt")))


def optim_file(path: Path, rank: int) -> Path:
    """Rank `rank`'s optimizer shard of a ZeRO-3 checkpoint (its name carries DeepSpeed's dtype prefix)."""
    files = list(Path(path).glob(f"*zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"))
    if len(files) != 1:
        raise CheckpointError(f"{path}: expected one optimizer shard of rank {rank}, found {len(files)}")
    return files[0]


def _old_layout(path: Path, world: int) -> tuple[list[tuple[str, int]], list[dict]]:
    """(name, numel) in the order the flat groups hold them, and every old rank's optimizer file."""
    model = load_zero_file(path / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    shapes = [(name, math.prod(shape)) for group in model["param_shapes"] for name, shape in group.items()]
    return shapes, [load_zero_file(optim_file(path, q))["optimizer_state_dict"] for q in range(world)]


def _parts(flats: list[torch.Tensor], shapes: list[tuple[str, int]], old: int, new: int, rank: int) -> dict:
    """{name: this rank's part under `new` ranks} from the old ranks' flat tensors, one parameter at a time."""
    out, offset = {}, 0
    for name, numel in shapes:
        old_part = math.ceil(numel / old)
        full = torch.cat([f[offset:offset + old_part] for f in flats])[:numel]
        offset += old_part
        new_part = math.ceil(numel / new)
        piece = full[rank * new_part:(rank + 1) * new_part]
        out[name] = torch.nn.functional.pad(piece, (0, new_part - piece.numel())).clone()
    if offset != flats[0].numel():
        raise CheckpointError(f"the checkpoint's flat groups hold {flats[0].numel()} elements per rank, its "
                              f"parameter shapes {offset}: not a ZeRO-3 layout medtrain can re-split")
    return out


def load_resharded(engine, path: Path) -> None:
    """Fill a freshly initialised ZeRO-3 engine of any world size from a checkpoint written by another."""
    old, new, rank = written_world_size(path), dist.get_world_size(), dist.get_rank()
    shapes, optims = _old_layout(path, old)
    zero = engine.optimizer
    groups = len(optims[0]["fp32_flat_groups"])  # one flat group per optimizer group (decay, no decay)
    states = [o["optimizer_state_dict"]["state"] for o in optims]
    if any(len(s) != groups for s in states) or len(zero.fp16_groups) != groups:
        raise CheckpointError(f"{path}: optimizer state in {len(states[0])} sub-groups for {groups} flat groups, "
                              f"this run has {len(zero.fp16_groups)}; re-splitting supports one sub-group per "
                              "optimizer group, as medtrain's presets give")
    sizes = [int(f.numel()) for f in optims[0]["fp32_flat_groups"]]
    per_element = {k for k, v in states[0][0].items() if torch.is_tensor(v) and v.numel() == sizes[0]}
    # every old rank's groups end to end: the layout `param_shapes` walks
    fp32 = _parts([torch.cat(list(o["fp32_flat_groups"])) for o in optims], shapes, old, new, rank)
    element_state = {k: _parts([torch.cat([s[g][k].float() for g in range(groups)]) for s in states], shapes, old,
                               new, rank) for k in per_element}
    names = {id(p): n for n, p in engine.module.named_parameters()}
    for i, params in enumerate(zero.fp16_groups):
        order = [names[id(p)] for p in params]
        master = zero.fp32_partitioned_groups_flat[i]
        values = torch.cat([fp32[n] for n in order])
        if values.numel() != master.numel():
            raise CheckpointError(f"{path}: rank {rank} needs {master.numel()} elements, the checkpoint gives "
                                  f"{values.numel()}; it was written for another model")
        with torch.no_grad():
            master.copy_(values.to(master.dtype))
            zero.fp16_partitioned_groups_flat[i].copy_(values.to(zero.fp16_partitioned_groups_flat[i].dtype))
        saved = states[0][i]
        state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in saved.items() if k not in per_element}
        for k in per_element:
            state[k] = torch.cat([element_state[k][n] for n in order]).to(saved[k].dtype)
        zero.optimizer.state[master] = state
    old_groups = optims[0]["optimizer_state_dict"]["param_groups"]
    for group, saved in zip(zero.optimizer.param_groups, old_groups, strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})
    _load_counters(engine, path)


def _load_counters(engine, path: Path) -> None:
    model = load_zero_file(path / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    if engine.lr_scheduler is not None and model.get("lr_scheduler") is not None:
        engine.lr_scheduler.load_state_dict(model["lr_scheduler"])
    engine.global_steps = model["global_steps"]
    engine.global_samples = model["global_samples"]
    engine.skipped_steps = model["skipped_steps"]
    scaler = getattr(engine.optimizer, "loss_scaler", None)
    saved = load_zero_file(optim_file(path, 0))["optimizer_state_dict"]
    if scaler is not None and saved.get("loss_scaler") is not None:
        engine.optimizer.loss_scaler = saved["loss_scaler"]
