"""`--exclude FILE`: score the clean subset of a benchmark, leaving out the questions `medtrain contamination`
found in the training data (its contaminated.jsonl: a line per question with `task`, `index` and `id`). The
lines are matched to the data's questions by id, and the results record the file, its digest and what was left
out, so a clean number is never mistaken for the full benchmark's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TypeVar

from medtrain.core.digest import sha256_file
from medtrain.eval.data import keyed_lines
from medtrain.eval.task import TaskError

T = TypeVar("T")


@dataclass
class Exclusion:
    path: Path
    task: str
    lines: dict[str, int]
    """Each excluded id of this task -> its line in the file."""
    removed: list[str]

    def keep(self, items: list[T], id_of: Callable[[T], str] = attrgetter("id")) -> list[T]:
        """The items (questions, or a finished run's prediction records) whose id is not excluded; the others
        are counted as removed."""
        kept = [x for x in items if id_of(x) not in self.lines]
        self.removed += [id_of(x) for x in items if id_of(x) in self.lines]
        return kept

    def check_all_found(self, ids: set[str], data: Path) -> None:
        """Every line of this task names a question of the data (`ids`): else the file was made from other data."""
        missing = sorted(set(self.lines) - ids, key=self.lines.get)
        if missing:
            raise TaskError(f"{self.path}:{self.lines[missing[0]]}: {self.task} question id {missing[0]!r} is not in "
                            f"{data} ({len(missing)} such lines); run `medtrain contamination` on this data")

    def record(self) -> dict:
        return {"file": str(self.path), "sha256": sha256_file(self.path), "questions": len(self.removed),
                "ids": self.removed}


def load_exclusion(path: Path | None, task: str) -> Exclusion | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"--exclude {path}: no such file; `medtrain contamination ... --out DIR` writes "
                        "DIR/contaminated.jsonl")
    lines = {str(qid): lineno for lineno, (line_task, qid) in
             keyed_lines(path, ("task", "id"), "a contaminated.jsonl line with task and id") if line_task == task}
    return Exclusion(path, task, lines, [])
