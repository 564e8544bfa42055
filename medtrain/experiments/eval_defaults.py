"""`medtrain eval cmexam` with nothing named: the card's third command evaluates the paper's fine-tuned model on
CMExam's test split, where the card's first two commands leave them, and says so in its first line.

CMExam's release (github.com/williamliujl/CMExam) names its test split `test_with_annotations.csv` (the test
questions with the five annotation columns the breakdowns read); medtrain looks for it under `data/cmexam/`,
where the README tells users to put it. What is missing is named with where to get it or the command that
makes it; nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core import hub
from medtrain.core.recipe import load_recipe
from medtrain.eval.task import TaskError

CMEXAM_TEST = Path("data/cmexam/test_with_annotations.csv")
CMEXAM_RELEASE = "https://github.com/williamliujl/CMExam"
PAPER_SFT = "paper/sft_cmexam_reasoning"


@dataclass
class EvalInputs:
    model: str | None
    data: Path
    out: Path
    chosen: list[str] = field(default_factory=list)
    """The defaults taken, for the command's first line."""


def results_name(model: str | None, predictions: Path | None) -> str:
    """A results folder name for a model: the run's name for runs/NAME/export, owner--name for a hub id."""
    if model is None:
        return Path(predictions or "predictions").stem
    if hub.is_hub_id(model):
        return model.replace("/", "--")
    path = Path(model).resolve()
    return path.parent.name if path.name == "export" else path.name


def cmexam_inputs(model: str | None, predictions: Path | None, data: Path | None, out: Path | None) -> EvalInputs:
    chosen, missing = [], []
    if model is None and predictions is None:
        run = Path(load_recipe(PAPER_SFT).output_dir)
        export = run / "export"
        if (export / "config.json").is_file():
            model = str(export)
            chosen.append(f"model {export} (the export of {PAPER_SFT})")
        else:
            missing.append(f"no --model, and the paper's SFT run has no export at {export}: train it with `medtrain "
                           f"launch --recipe {PAPER_SFT}` (it exports when it finishes), export a checkpoint with "
                           f"`medtrain export --checkpoint {run} --out {export}`, or pass --model DIR")
    if data is None:
        data = CMEXAM_TEST
        if data.is_file():
            chosen.append(f"data {data} (CMExam's test split)")
        else:
            missing.append(f"no --data, and CMExam's test split is not at {data}: download test_with_annotations.csv "
                           f"from CMExam's release ({CMEXAM_RELEASE}) into {data.parent}/, or pass --data FILE")
    if missing:
        raise TaskError("; and ".join(missing))
    if out is None:
        out = Path("results") / "cmexam" / results_name(model, predictions)
        chosen.append(f"out {out}")
    return EvalInputs(model, data, out, chosen)
