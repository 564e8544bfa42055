"""The eval questions as the contamination check sees them: each task's test questions in the order
`medtrain eval` numbers them (CMExam's rows; MMLU and CMMLU subject by subject in name order; MedQA's and
MedMCQA's records), read by the eval's own readers, each as the text its prompt shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtrain.eval.data import Question, mc_subjects, read_cmexam, read_mc_subject
from medtrain.eval.task import MultipleChoiceTask, TaskError, load_task

TASKS = ("cmexam", "mmlu", "cmmlu", "medqa", "medmcqa")


@dataclass(frozen=True)
class EvalQuestion:
    task: str
    index: int
    id: str
    text: str


def question_text(q: Question) -> str:
    """The question and its options as every prompt template shows them; the instruction around them is the
    template's, shared by every question, and would match any training data written with the same template."""
    return q.question.strip() + "\n" + "\n".join(f"{k}. {v}" for k, v in q.options.items())


def task_questions(task: str, path: Path, answer_index: int | None = None) -> list[Question]:
    if task not in TASKS:
        raise TaskError(f"--eval {task}=...: not a task the check reads; one of {', '.join(TASKS)}")
    if task == "cmexam":
        return read_cmexam(path)
    spec = load_task(task)
    assert isinstance(spec, MultipleChoiceTask)
    return [q for subject in mc_subjects(spec, path)
            for q in read_mc_subject(spec, path, subject, "test", answer_index)]


def eval_questions(task: str, path: Path, answer_index: int | None = None) -> list[EvalQuestion]:
    return [EvalQuestion(task, i, q.id, question_text(q))
            for i, q in enumerate(task_questions(task, path, answer_index))]


def parse_eval(spec: str) -> tuple[str, Path]:
    """TASK=PATH, as `--eval` takes it."""
    task, sep, path = spec.partition("=")
    if not sep or not path:
        raise TaskError(f"--eval {spec!r}: expected TASK=PATH, e.g. cmexam=data/cmexam/val.csv "
                        f"(tasks: {', '.join(TASKS)})")
    if task not in TASKS:
        raise TaskError(f"--eval {spec!r}: {task!r} is not one of {', '.join(TASKS)}")
    return task, Path(path)
