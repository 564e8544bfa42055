"""CNMLEQA (China's National Medical Licensing Examination QA): the release's JSON array of {question,
opa..ope, answer "opa".."ope"}; no explanations. MedMCQA shares its opa.. keys (core.benchmarks.medmcqa)."""

from __future__ import annotations

from medtrain.core.benchmarks.record import MCRecord, gold_letters

OPTION_KEYS = ("opa", "opb", "opc", "opd", "ope")


def options_of(rec: dict) -> dict[str, str]:
    """The options under opa..ope that the record has (an empty one kept, as lm-evaluation-harness keeps it)."""
    return {"ABCDE"[i]: str(rec[k]) for i, k in enumerate(OPTION_KEYS) if rec.get(k) is not None}


def answer_of(rec: dict) -> str:
    """The letter an "answer": "opX" names; "" when it names no option key."""
    answer = rec.get("answer")
    return "ABCDE"[OPTION_KEYS.index(answer)] if isinstance(answer, str) and answer in OPTION_KEYS else ""


def from_record(rec: dict) -> MCRecord:
    options = options_of(rec)
    return MCRecord(str(rec.get("question") or ""), options, gold_letters(answer_of(rec), options))
