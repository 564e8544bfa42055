"""MedQA (Jin et al., 2021) in every public layout: the official US (4- and 5-option), Mainland and Taiwan JSON
Lines ({"question", "options": {"A": ...}, "answer", "answer_idx"}) and the Hugging Face copies that keep it,
bigbio/med_qa's source schema (options as [{"key": "A", "value": ...}]), copies with options as a plain list, and
the GBaker copy in SWAG's layout ({"sent1", "ending0".."ending3", "label"}). The letter comes from answer_idx
(or label), else from the answer text matched against the options, else from an answer given as its letter."""

from __future__ import annotations

import re

from medtrain.core.benchmarks.record import MCRecord, SchemaError, gold_letters, lettered


def options_of(rec: dict) -> dict[str, str]:
    raw = rec.get("options")
    if isinstance(raw, dict) and raw:
        return {str(k).strip().upper(): str(v) for k, v in raw.items()}
    if isinstance(raw, list) and raw and all(isinstance(o, dict) and "key" in o and "value" in o for o in raw):
        return {str(o["key"]).strip().upper(): str(o["value"]) for o in raw}
    if isinstance(raw, list) and raw and all(isinstance(o, str) for o in raw):
        return lettered(raw)
    endings = sorted((k for k in rec if re.fullmatch(r"ending\d+", str(k))), key=lambda k: int(k[6:]))
    if endings:
        return lettered([rec[k] for k in endings])
    raise SchemaError("no_options", "MedQA records have options (an object, a key/value list or a list) or "
                      "ending0..N")


def answer_of(rec: dict, options: dict[str, str]) -> str:
    if str(rec.get("answer_idx") or "").strip():
        return str(rec["answer_idx"]).strip().upper()
    label = rec.get("label")
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(options):
        return list(options)[label]
    if isinstance(rec.get("answer"), str):
        text = rec["answer"].strip()
        found = next((k for k, v in options.items() if v.strip() == text), "")
        if found or not re.fullmatch(r"[A-Za-z]", text):
            return found
        return text.upper()  # an answer given as its letter
    return ""


def from_record(rec: dict) -> MCRecord:
    options = options_of(rec)
    question = rec.get("question", rec.get("sent1", ""))
    return MCRecord(str(question or ""), options, gold_letters(answer_of(rec, options), options),
                    id=str(rec["id"]) if rec.get("id") is not None else None)
