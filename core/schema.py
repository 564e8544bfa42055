"""YAML mappings onto dataclasses, strictly: unknown keys, missing keys and wrong types are all reported at once,
each with its key path, in one line that names the file. Recipes and eval task specs both load through here."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from medtrain.core.errors import UserError

T = TypeVar("T")


def type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        key_t, value_t = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, dict) and all(type_ok(k, key_t) and type_ok(v, value_t) for k, v in value.items())
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis] or [Any]
        return isinstance(value, (list, tuple)) and all(type_ok(v, args[0]) for v in value)
    return isinstance(value, annotation)


def describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _check(cls: type, raw: dict[str, Any], path: str, problems: list[str], skip: tuple[str, ...]) -> dict[str, Any]:
    """Problems of `raw` against `cls` appended to `problems`; returns the kwargs (nested dataclasses built)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    problems += unknown_keys([k for k in raw if k not in fields], list(fields), path)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in raw:
            if required:
                problems.append(f"missing required key '{path}{name}'")
            continue
        value, annotation = raw[name], hints[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                problems.append(f"key '{path}{name}' must be a mapping, got {value!r}")
                continue
            sub: list[str] = []
            built = _check(annotation, value, f"{path}{name}.", sub, ())
            problems += sub
            kwargs[name] = None if sub else annotation(**built)
            continue
        if typing.get_origin(annotation) is list and isinstance(value, str):  # --set key=a,b
            value = [v.strip() for v in value.split(",") if v.strip()]
        if annotation is float and isinstance(value, str):
            try:  # YAML 1.1 reads 2e-5 as a string; accept it as the number it plainly is
                value = float(value)
            except ValueError:
                pass
        if not type_ok(value, annotation):
            problems.append(f"key '{path}{name}' must be {describe(annotation)}, got {value!r}")
        kwargs[name] = tuple(value) if typing.get_origin(annotation) is tuple else value
    return kwargs


SYNONYMS = {
    # what the HF Trainer, LLaMA-Factory, axolotl and torchtune call a recipe key
    "learning_rate": "lr", "per_device_train_batch_size": "micro_batch", "micro_batch_size": "micro_batch",
    "batch_size": "micro_batch", "num_train_epochs": "epochs", "num_epochs": "epochs", "cutoff_len": "seq_len",
    "sequence_len": "seq_len", "max_seq_length": "seq_len", "max_seq_len": "seq_len", "warmup_steps": "warmup_ratio",
    "lr_scheduler_type": "lr_schedule", "lr_scheduler": "lr_schedule", "save_steps": "checkpoint_every",
    "save_total_limit": "keep_checkpoints", "logging_steps": "log_every", "eval_steps": "eval_every",
    "model_name_or_path": "model", "base_model": "model", "dataset": "data", "datasets": "data",
    "max_grad_norm_clip": "max_grad_norm", "gradient_clipping": "max_grad_norm", "optim": "optimizer",
    "fp16": "precision", "bf16": "precision", "sample_packing": "packing", "seed_value": "seed",
}


def did_you_mean(key: str, known: list[str]) -> str | None:
    """The known key a typo or another tool's name most likely meant: another tool's name for it, the same letters
    without underscores, or the closest by difflib."""
    key = str(key)
    if SYNONYMS.get(key.lower()) in known:
        return SYNONYMS[key.lower()]
    same = [k for k in known if k.replace("_", "") == key.replace("_", "").lower()]
    close = same or difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_keys(keys: list[str], known: list[str], path: str = "", where: str = "") -> list[str]:
    """One problem per unknown key, each with its likely meaning; the known keys listed once, at the last one,
    when some key has no likely meaning."""
    problems = []
    for key in keys:
        guess = did_you_mean(key, known)
        problems.append(f"{where}unknown key '{path}{key}'" + (f" (did you mean {guess}?)" if guess else ""))
    if any(did_you_mean(k, known) is None for k in keys):
        problems[-1] += f" (known keys: {', '.join(known)})"
    return problems


def from_mapping(cls: type[T], raw: Any, source: str, error: type[UserError], *, what: str = "file",
                 skip: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> T:
    """Build `cls` from a mapping, or raise `error` listing every problem with its key path."""
    if not isinstance(raw, dict):
        raise error(f"{source}: a {what} is a YAML mapping of key: value, got {type(raw).__name__}")
    problems: list[str] = []
    kwargs = _check(cls, raw, "", problems, skip)
    if problems:
        raise error(f"{source}: " + "; ".join(problems))
    return cls(**kwargs, **(extra or {}))


def read_yaml(path: Path, error: type[UserError], missing: str) -> Any:
    """A YAML file's content; a missing file or bad YAML is `error` with file:line."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise error(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
