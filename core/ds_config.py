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


BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def read_ds_config(path: Path) -> dict[str, Any]:
    """A user's DeepSpeed JSON (`launch --ds-config`), refused with file:line when it is not JSON."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--ds-config {path}: no such file; `medtrain config deepspeed --out FILE` writes one to "
                          "edit") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a DeepSpeed config is a JSON object")
    return raw


def ds_config_conflicts(raw: dict[str, Any], computed: dict[str, Any], precision: str) -> list[str]:
    """Where a user's DeepSpeed JSON contradicts what the recipe trains with: the batch split, the precision,
    ZeRO-3, clipping, the 16-bit gather export needs, and optimizer/scheduler sections medtrain's own would
    replace. `"auto"` agrees with anything (the recipe's value is taken)."""
    problems = []
    equation = (f"{computed['train_micro_batch_size_per_gpu']} micro x {computed['gradient_accumulation_steps']} "
                f"accum x ranks = {computed['train_batch_size']}")
    for key in BATCH_KEYS:
        if raw.get(key, "auto") not in ("auto", computed[key]):
            problems.append(f"{key} is {raw[key]}, the recipe's batch is {equation} (global_batch, micro_batch and "
                            "the hosts decide it; \"auto\" takes it)")
    for name in ("fp16", "bf16"):
        enabled = (raw.get(name) or {}).get("enabled", False)
        if enabled not in ("auto", computed[name]["enabled"]):
            problems.append(f"{name}.enabled is {str(enabled).lower()}, the recipe trains in {precision} (change "
                            "precision in the recipe, not here)")
    stage = (raw.get("zero_optimization") or {}).get("stage", 3)
    if stage != 3:
        problems.append(f"zero_optimization.stage is {stage}; medtrain trains, checkpoints and exports with ZeRO-3")
    if (raw.get("zero_optimization") or {}).get("stage3_gather_16bit_weights_on_model_save", True) is False:
        problems.append("zero_optimization.stage3_gather_16bit_weights_on_model_save is false; the export at the end "
                        "of the run needs it true")
    if raw.get("gradient_clipping", "auto") not in ("auto", computed["gradient_clipping"]):
        problems.append(f"gradient_clipping is {raw['gradient_clipping']}, the recipe's max_grad_norm is "
                        f"{computed['gradient_clipping']} (set max_grad_norm in the recipe)")
    for section in ("optimizer", "scheduler"):
        if section in raw:
            problems.append(f"has a '{section}' section; the recipe's optimizer and medtrain's lr schedule are what "
                            "run (optimizer, lr, lr_schedule in the recipe): remove it")
    return problems


def merge_ds_config(raw: dict[str, Any], computed: dict[str, Any], *, batch_from_raw: bool = True) -> dict[str, Any]:
    """The user's JSON over the computed one, "auto" values taken from the computed; `batch_from_raw` False when
    the world size changed since (a shrunk or re-split run): the batch split is the new one's."""
    merged = dict(computed)
    for key, value in raw.items():
        if value == "auto" or (key in BATCH_KEYS and not batch_from_raw):
            continue
        if isinstance(value, dict) and isinstance(computed.get(key), dict):
            merged[key] = {**computed[key], **{k: v for k, v in value.items() if v != "auto"}}
        else:
            merged[key] = value
    return merged
