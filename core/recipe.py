"""Run recipes: one YAML file maps 1:1 onto `Recipe`; unknown keys, wrong types and missing fields are errors.

A recipe is what a cluster slot is spent on, so every check that can run on a laptop runs here, before launch.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from core.errors import UserError


class RecipeError(UserError):
    """A recipe the user can fix; the message names the file and the key."""


Stage = Literal["continual", "sft"]
Precision = Literal["fp16", "bf16", "fp32"]
Packing = Literal["packed", "per_document"]
Optimizer = Literal["adafactor", "adamw"]


@dataclass
class Recipe:
    stage: Stage
    """continual (causal LM on raw text) or sft (prompt masked from the loss)."""
    model: str
    """A Hugging Face model directory, or a named config from core.model_specs (e.g. llama2-13b, tiny)."""
    data: str
    """A dataset directory written by `medtrain prep` (use `prep mix` to combine several)."""
    output_dir: str
    """Where checkpoints, metrics.jsonl, TensorBoard events and the exported model go."""
    tokenizer: str | None = None
    """Tokenizer directory; defaults to the model directory. Must be the one the data was prepared with."""
    seq_len: int = 4096
    """Longest training sequence in tokens (packed block size for continual)."""
    global_batch: int = 120
    """Samples per optimizer step over all ranks: micro_batch x accumulation x world size."""
    micro_batch: int = 1
    """Samples per rank per forward pass."""
    lr: float = 2e-5
    """Peak learning rate after warmup."""
    epochs: int = 1
    warmup_ratio: float = 0.03
    """Warmup steps = ceil(warmup_ratio x total steps), then linear decay to 0."""
    weight_decay: float = 0.0
    precision: Precision = "fp16"
    preset: str = "v100-zero3-fp16"
    """DeepSpeed preset (medtrain config deepspeed --help lists them)."""
    optimizer: Optimizer = "adafactor"
    """adafactor: HF Adafactor as `--optim adafactor` (scale_parameter/relative_step/warmup_init off)."""
    gradient_checkpointing: bool = True
    packing: Packing = "packed"
    """continual only: packed seq_len blocks, or one document per sample (the paper's ~3,000 steps)."""
    checkpoint_every: int = 0
    """Save a checkpoint every N optimizer steps (0: only at the end)."""
    keep_checkpoints: int = 3
    """Keep the newest K checkpoints (0 keeps all)."""
    log_every: int = 1
    seed: int = 42
    max_steps: int = 0
    """Stop after N steps (0: run all epochs). For smoke runs; the schedule still spans the full run."""
    loss_scale_patience: int = 20
    """fp16: stop when the loss scale sits at its minimum for this many consecutive steps."""
    expected_samples: int = 0
    """Samples per epoch that `plan` assumes when the data is not prepared yet (Huatuo encyclopedia: 364,420)."""
    expected_tokens: int = 0
    """Tokens per epoch that `plan` assumes when the data is not prepared yet (the paper: ~1B)."""
    continual_step: int | None = None
    """Lineage: the continual-pretraining checkpoint step this run starts from (sft after continual)."""
    attn_implementation: str = "sdpa"
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes carried into lineage; never read by the trainer."""

    source: str = field(default="<memory>", repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self.source
        problems = []
        positive = ("seq_len", "global_batch", "micro_batch", "epochs", "log_every", "loss_scale_patience")
        for name in positive:
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        for name in ("checkpoint_every", "keep_checkpoints", "max_steps", "expected_samples", "expected_tokens"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if not (0.0 <= self.warmup_ratio < 1.0):
            problems.append(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr={self.lr} must be a positive number")
        if problems:
            raise RecipeError(f"{where}: " + "; ".join(problems))

    @property
    def tokenizer_dir(self) -> str:
        return self.tokenizer or self.model

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    return isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text)


def recipe_from_dict(raw: dict[str, Any], source: str = "<memory>") -> Recipe:
    """Build a Recipe, reporting every unknown key, missing field and wrong type at once."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping of key: value, got {type(raw).__name__}")
    hints = typing.get_type_hints(Recipe)
    fields = {f.name: f for f in dataclasses.fields(Recipe) if f.name != "source"}
    problems = []
    for key in raw:
        if key not in fields:
            close = [k for k in fields if k.replace("_", "") == str(key).replace("_", "").lower()]
            hint = f" (did you mean {close[0]}?)" if close else f" (known keys: {', '.join(fields)})"
            problems.append(f"unknown key '{key}'{hint}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                problems.append(f"missing required key '{name}'")
            continue
        value = raw[name]
        if hints[name] is float and isinstance(value, str):
            try:  # YAML 1.1 reads 2e-5 as a string; accept it as the number it plainly is
                value = raw[name] = float(value)
            except ValueError:
                pass
        if not _type_ok(value, hints[name]):
            problems.append(f"key '{name}' must be {_describe(hints[name])}, got {value!r}")
    if problems:
        raise RecipeError(f"{source}: " + "; ".join(problems))
    return Recipe(**{k: v for k, v in raw.items()}, source=source)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML; `key=value` overrides land on the same fields and are checked the same way."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    raw = raw or {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override '{item}' must look like key=value")
        if isinstance(raw, dict):
            raw[key.strip()] = _parse_scalar(value)
    return recipe_from_dict(raw, source=str(path))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)
