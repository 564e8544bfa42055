"""CMExam (Liu et al., 2023): the release's CSV (Question, Options, Answer, Explanation and five annotation
columns), and copies as JSON Lines, JSON, parquet or a `datasets` folder with the same columns in any case, Options
as the CSV's cell of "A 内容" lines, a {"A": text} mapping or a list of such lines."""

from __future__ import annotations

from pathlib import Path

from medtrain.core.benchmarks.record import MCRecord, SchemaError, gold_letters, parse_options
from medtrain.core.errors import UserError

REQUIRED = ("Question", "Options", "Answer")
META = ("Disease Group", "Area of Competency", "Clinical Department", "Medical Discipline", "Difficulty level")


def check_header(header: list[str], path: Path, error: type[UserError]) -> list[str]:
    """The header with BOMs and spaces stripped; `error` (the caller's kind) when a required column is missing."""
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise error(f"{path}:1: missing column(s) {', '.join(missing)}; CMExam CSVs have "
                    f"Question,Options,Answer,Explanation (found: {', '.join(header)})")
    return header


def options_of(raw: object) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k).strip().upper(): str(v).strip() for k, v in raw.items()}
    return parse_options("\n".join(map(str, raw)) if isinstance(raw, list) else str(raw or ""))


def from_record(rec: dict) -> MCRecord:
    """One CMExam row or JSON record (keys in any case). The annotation columns travel as `meta`."""
    cell = {str(k).strip().lower(): v for k, v in rec.items()}
    if "question" not in cell or "answer" not in cell:
        raise SchemaError("missing_fields", "CMExam records have Question, Options, Answer, Explanation")
    options = options_of(cell.get("options"))
    if not options:
        raise SchemaError("option_without_letter", "no options")
    meta = {k: rec[k] for k in META if k in rec}
    return MCRecord(str(cell["question"] or ""), options, gold_letters(str(cell["answer"] or ""), options),
                    str(cell.get("explanation") or ""), str(cell["id"]) if cell.get("id") else None, meta)
