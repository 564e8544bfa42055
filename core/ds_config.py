"""DeepSpeed JSON from a preset and a run's batch triple and schedule (core.run_spec computes those).

Batch sizes are computed (micro x accumulation x world), bucket sizes follow the model's hidden size the way
Hugging Face's "auto" fills them, and the optimizer is left to the client (HF Adafactor), which is why
`zero_allow_untested_optimizer` is on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtrain.core.errors import UserError
from medtrain.core.publish import publish_text


class ConfigError(UserError):
    """A preset/precision/batch combination that cannot work."""


@dataclass(frozen=True)
class Preset:
    name: str
    precision: str
    """Default precision; a recipe may choose another one from `allowed`."""
    allowed: tuple[str, ...]
    overlap_comm: bool
    about: str
    peak_tflops: float = 0.0
    """Dense tensor-core peak per GPU in the default precision (0: unknown, no MFU is reported)."""
    gpu: bool = True
    """Ranks need a GPU each (a scheduler is asked for them)."""
    gpu_mem_gb: float = 32.0
    """Memory per device that `plan` and `launch` size against unless told otherwise."""
    capability: tuple[int, int] | None = None
    """The GPU generation's CUDA compute capability (what `plan` names the attention kernel for)."""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("v100-zero3-fp16", "fp16", ("fp16", "fp32"), True, "V100 32GB: no bf16, fp16 with dynamic loss scaling",
               125.0, gpu_mem_gb=32.0, capability=(7, 0)),
        Preset("a100-40gb-zero3-bf16", "bf16", ("bf16", "fp16", "fp32"), True, "A100 40GB: bf16, no loss scaling",
               312.0, gpu_mem_gb=40.0, capability=(8, 0)),
        Preset("a100-zero3-bf16", "bf16", ("bf16", "fp16", "fp32"), True, "A100 80GB: bf16, no loss scaling", 312.0,
               gpu_mem_gb=80.0, capability=(8, 0)),
        Preset("h100-zero3-bf16", "bf16", ("bf16", "fp16", "fp32"), True, "H100 80GB (an H200 has 141): bf16, no "
               "loss scaling", 989.0, gpu_mem_gb=80.0, capability=(9, 0)),
        Preset("cpu-zero3", "fp32", ("fp32", "bf16", "fp16"), False, "DeepSpeed CPU accelerator over gloo (tests)",
               gpu=False, gpu_mem_gb=32.0),
    )
}


def precision_warning(preset: str, precision: str) -> str | None:
    """A recipe precision the preset does not recommend: allowed, but said (fp16 on an H100 trains with loss
    scaling it does not need; fp32 on a V100 runs at a fraction of its tensor-core speed)."""
    p = PRESETS.get(preset)
    if p is None or precision == p.precision:
        return None
    return (f"preset {preset} recommends {p.precision}; this recipe trains in {precision} (set precision: "
            f"{p.precision} in the recipe, or --set precision={p.precision}, unless you mean it)")


def build_ds_config(
    *,
    preset: str,
    precision: str | None,
    micro_batch: int,
    accumulation: int,
    world_size: int,
    hidden_size: int,
    max_grad_norm: float = 1.0,
    steps_per_print: int = 10,
) -> dict[str, Any]:
    """Only what the engine uses: the lr schedule is medtrain's own (the trainer's, recorded in RUN_DIR/
    schedule.json), so the JSON names no scheduler that never runs."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    precision = precision or p.precision
    if precision not in p.allowed:
        raise ConfigError(f"preset {preset} does not support {precision}; it allows {', '.join(p.allowed)}")
    if min(micro_batch, accumulation, world_size) <= 0:
        raise ConfigError(
            f"micro_batch={micro_batch}, accumulation={accumulation} and world_size={world_size} must all be positive"
        )
    h2 = hidden_size * hidden_size
    config: dict[str, Any] = {
        "train_batch_size": micro_batch * accumulation * world_size,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": max_grad_norm,
        "steps_per_print": steps_per_print,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": p.overlap_comm,
            "contiguous_gradients": True,
            "reduce_bucket_size": h2,
            "stage3_prefetch_bucket_size": int(0.9 * h2),
            "stage3_param_persistence_threshold": 10 * hidden_size,
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            "sub_group_size": 1_000_000_000,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "fp16": {"enabled": precision == "fp16"},
        "bf16": {"enabled": precision == "bf16"},
    }
    if precision == "fp16":
        config["fp16"].update(
            {"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2,
             "min_loss_scale": 1}
        )
    return config


def render_ds_config(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def write_ds_config(config: dict[str, Any], out: Path) -> None:
    publish_text(out, render_ds_config(config))


def describe_ds_config(config: dict) -> tuple[str, str]:
    """The precision a DeepSpeed JSON trains in, and one line of what it holds (stage, precision, batch split)."""
    precision = "fp16" if config["fp16"]["enabled"] else "bf16" if config["bf16"]["enabled"] else "fp32"
    micro, accum = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
    ranks = config["train_batch_size"] // (micro * accum)
    return precision, (f"ZeRO stage {config['zero_optimization']['stage']}, {precision}, train_batch_size "
                       f"{config['train_batch_size']} = {micro} micro x {accum} accum x {ranks} ranks")
