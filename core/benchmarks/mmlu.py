"""MMLU (Hendrycks et al., 2021) and CMMLU (Li et al., 2023): one CSV per subject and split, rows of question,
A, B, C, D, answer; MMLU's files have no header, CMMLU's have one and an unnamed index column first."""

from __future__ import annotations

from medtrain.core.benchmarks.record import MCRecord, SchemaError, gold_letters


def from_row(row: list[str], header: bool) -> MCRecord:
    """One row as csv.reader gives it; `header`: CMMLU's layout (its first column is an index)."""
    cells = row[1:] if header else row
    if len(cells) < 6:
        raise SchemaError("short_row", f"expected question, A, B, C, D, answer; got {len(cells)} columns")
    question, a, b, c, d, answer = cells[:6]
    options = {"A": a, "B": b, "C": c, "D": d}
    return MCRecord(question, options, gold_letters(answer.strip(), options))
