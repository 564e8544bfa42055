"""What an evaluation runs with when the caller leaves it out, decided in one place: `medtrain eval`, the sweep
(which records these settings as its cells' identity, so a cell is reused only for the settings it really ran
with) and the runners all ask here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medtrain.core.templates import TEMPLATES, get_template
from medtrain.eval.extract import MODES
from medtrain.eval.task import GenerateTask, TaskError

DEFAULT_SHOTS = 5
"""MMLU and CMMLU are 5-shot in the paper, as in both benchmarks' own scripts."""
DEFAULT_SCORING = "original"
"""The benchmarks' own scripts' rule (the letter's logit); `harness` is lm-evaluation-harness's."""


def model_lineage(model_dir: Path | None) -> dict | None:
    if model_dir is None:
        return None
    path = Path(model_dir) / "lineage.json"
    return json.loads(path.read_text()) if path.is_file() else None


def default_template(model_dir: Path | None) -> str:
    """The template the model was fine-tuned with (its lineage says), else a plain prompt for base models."""
    lineage = model_lineage(model_dir) or {}
    while lineage:
        if lineage.get("stage") == "sft" and lineage.get("template"):
            return lineage["template"]["name"]
        lineage = lineage.get("base_lineage") or {}
    return "plain_mcq"


@dataclass(frozen=True)
class GenerateSettings:
    template: str
    extract: str
    max_new_tokens: int


def generate_settings(task: GenerateTask, model_dir: Path | None, template: str | None = None,
                      extract: str | None = None, max_new_tokens: int | None = None) -> GenerateSettings:
    """The template (the model's SFT template, else the task's), the extraction (paper for plain prompts, the
    task's for Alpaca templates) and the generation length a generate task runs with."""
    template = template or (default_template(model_dir) if model_dir else task.template)
    if template not in TEMPLATES:
        raise TaskError(f"unknown template '{template}'; known: {', '.join(TEMPLATES)}")
    mode = extract or ("paper" if not get_template(template).alpaca else task.extract)
    if mode not in MODES:
        raise TaskError(f"--extract {mode} is not one of {', '.join(MODES)}")
    return GenerateSettings(template, mode, max_new_tokens or task.generation.max_new_tokens)
