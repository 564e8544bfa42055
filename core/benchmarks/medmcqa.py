"""MedMCQA (Pal et al., 2022): {question, opa..opd, cop, exp}; a record without `cop` may name its answer as
CNMLEQA does ("answer": "opX"). `cop` counts from 1 in the official release (its
loader does cop - 1) and from 0 in the Hugging Face copy (a ClassLabel a-d; -1 on the unlabelled test split);
`index_base` reads which from a file's values, and all 1-3 is ambiguous and refused, never guessed."""

from __future__ import annotations

from medtrain.core.benchmarks import cnmleqa
from medtrain.core.benchmarks.record import MCRecord, SchemaError, gold_letters


class AmbiguousBase(SchemaError):
    def __init__(self, detail: str) -> None:
        super().__init__("ambiguous_answer_index", detail)


def cop_of(rec: dict) -> int | None:
    """The answer index as a file stores it, a number or its digits ("3"); None when absent or not one."""
    cop = rec.get("cop")
    if isinstance(cop, bool):
        return None
    if isinstance(cop, int):
        return cop
    if isinstance(cop, str) and cop.strip().lstrip("-").isdigit():
        return int(cop.strip())
    return None


def index_base(seen: set[int]) -> int | None:
    """0 or 1: what a file's answer indices count from, read from the values it holds (0 or -1: the Hugging Face
    copy; 4 with four options: the official release). None when every value fits both (all 1-3)."""
    zero, one = seen & {0, -1}, seen & {4}
    if zero and one:
        raise AmbiguousBase(f"answer indices {sorted(zero)} (counted from 0) and 4 (from 1) in one file; split it")
    if zero:
        return 0
    if one or not seen:
        return 1
    return None


def from_record(rec: dict, base: int) -> MCRecord:
    """`base`: what `cop` counts from (index_base, or --answer-index). The unlabelled test split's -1 is a
    SchemaError: it has no gold answer to train on or score against."""
    cop = cop_of(rec)
    if cop == -1:
        raise SchemaError("unlabelled_test_record", message="an unlabelled test record (cop -1): MedMCQA's test "
                          "split has no answers; evaluate on its validation split")
    options = cnmleqa.options_of(rec)  # opa..opd (CNMLEQA's copies add ope)
    answer = "ABCDE"[cop - base] if cop is not None and 0 <= cop - base < len(options) else cnmleqa.answer_of(rec)
    return MCRecord(str(rec.get("question") or ""), options, gold_letters(answer, options),
                    str(rec.get("exp") or ""), str(rec["id"]) if rec.get("id") is not None else None)
