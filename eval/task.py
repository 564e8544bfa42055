"""Eval tasks are data (eval/tasks/*.yaml); this loads them into frozen specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


class TaskError(UserError):
    """An eval input the user can fix (data layout, model directory, predictions file)."""


@dataclass(frozen=True)
class TaskSpec:
    task: str
    version: int
    output: str
    raw: dict[str, Any] = field(repr=False, hash=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)


def load_task(name: str) -> TaskSpec:
    path = TASKS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TASKS_DIR.glob("*.yaml")))
        raise TaskError(f"unknown task '{name}'; known: {known}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return TaskSpec(task=raw["task"], version=int(raw["version"]), output=raw["output"], raw=raw)
