"""Eval tasks are data (eval/tasks/*.yaml), loaded into typed, frozen specs.

Every key a task file declares is read by the code that runs it (`output` picks the runner, `metrics` the
metrics computed, `no_answer` the label of an unparsable output); a misspelt or missing key is one line naming
the file and the key, never a KeyError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medtrain.core.errors import UserError
from medtrain.core.schema import from_mapping, read_yaml

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


class TaskError(UserError):
    """An eval input the user can fix (data layout, model directory, predictions file, task file)."""


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int
    """256 in the paper."""
    do_sample: bool = False
    """Greedy decoding, as the paper."""


@dataclass(frozen=True)
class GenerateTask:
    """Free generation, answer extraction, metrics over answer strings (CMExam)."""
    task: str
    version: int
    """Bump when prompt, extraction or metric changes."""
    output: Literal["generate"]
    generation: Generation
    template: str
    """Default prompt template (a data_prep template) when the model's lineage names none."""
    extract: Literal["hard", "paper", "cmexam"]
    """Extraction for templates that teach "答案: X"; plain prompts use paper extraction."""
    metrics: tuple[Literal["acc", "weighted_f1"], ...]
    no_answer: str
    """The label an unparsable output gets (its own class in weighted F1, always wrong)."""
    breakdowns: tuple[str, ...] = ()
    """Annotation columns to report accuracy by, when the data has them."""


@dataclass(frozen=True)
class Layout:
    test: str
    """subjects: a path pattern with {subject}; records: a file name inside --data."""
    dev: str = ""
    """Few-shot examples, as `test` (records: optional, needed only for --shots > 0)."""
    header: bool = False
    """CMMLU's CSVs have a header row and an index column; MMLU's have neither."""
    kind: Literal["subjects", "records"] = "subjects"
    """subjects: one CSV per subject (MMLU, CMMLU); records: one JSON Lines/JSON file of questions in a released
    schema (`records`), any number of options each."""
    records: Literal["medqa", "medmcqa"] | None = None
    """The schema of a records file: medqa (official {question, options, answer_idx} or the GBaker copy's
    {sent1, ending0..3, label}); medmcqa ({question, opa..opd, cop}, cop from 0 or 1 as detected)."""


@dataclass(frozen=True)
class PromptStyle:
    header: str
    question: str
    shot_answer: str
    continuation: str = ""
    """harness only: the text scored after the context, with {letter}."""
    strip_question: bool = False


@dataclass(frozen=True)
class MultipleChoiceTask:
    """k-shot multiple choice scored by likelihood, in the original benchmark's and lm-eval's conventions."""
    task: str
    version: int
    output: Literal["multiple_choice"]
    layout: Layout
    original: PromptStyle
    harness: PromptStyle
    overall: Literal["micro", "macro"]
    """micro pools all questions (the MMLU paper), macro averages subjects (the CMMLU paper)."""
    subject_names: dict[str, str] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    def subject_name(self, subject: str) -> str:
        return self.subject_names.get(subject, subject.replace("_", " "))

    def style(self, scoring: str) -> PromptStyle:
        return self.harness if scoring == "harness" else self.original


TaskSpec = GenerateTask | MultipleChoiceTask
_BY_OUTPUT: dict[str, type] = {"generate": GenerateTask, "multiple_choice": MultipleChoiceTask}


def load_task(name: str, tasks_dir: Path = TASKS_DIR) -> TaskSpec:
    path = tasks_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in tasks_dir.glob("*.yaml")))
        raise TaskError(f"unknown task '{name}'; known: {known}")
    raw = read_yaml(path, TaskError, "no such task file")
    output = raw.get("output") if isinstance(raw, dict) else None
    if output not in _BY_OUTPUT:
        raise TaskError(f"{path}: key 'output' must be one of {', '.join(_BY_OUTPUT)}, got {output!r}")
    return from_mapping(_BY_OUTPUT[output], raw, str(path), TaskError, what="task file")
