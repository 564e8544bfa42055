"""The neutral multiple-choice record every schema produces, and the option parsing they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medtrain.core.errors import UserError


class SchemaError(UserError):
    """A record that is not a question of its benchmark. `reason` is a short key (prep counts skips by it); the
    message says what is wrong. Prep skips such a record and counts it; eval refuses the file at that record."""

    def __init__(self, reason: str, detail: str = "", message: str = "") -> None:
        super().__init__(message or f"{reason.replace('_', ' ')}{': ' + detail if detail else ''}")
        self.reason, self.detail = reason, detail


class OptionError(SchemaError):
    """An options cell that cannot be read; the message names the line."""

    def __init__(self, detail: str) -> None:
        super().__init__("option_without_letter", detail)


@dataclass
class MCRecord:
    question: str
    options: dict[str, str]
    """Letter -> option text, in the order shown."""
    answer: str
    """The gold letters in option order ("AD" for a multiple answer); "" when the record has none."""
    explanation: str = ""
    id: str | None = None
    meta: dict = field(default_factory=dict)


_OPTION = re.compile(r"^\s*([A-Z])(?:[\s.．、:：)）]+|$)(.*)$")


def parse_options(cell: str) -> dict[str, str]:
    """An options cell, one "A 内容" line per option (CMExam's Options column)."""
    options: dict[str, str] = {}
    # the upstream CMExam spreadsheet joins options with a literal backslash-n; read it as the line break it means
    cell = cell.replace("\\r\\n", "\n").replace("\\n", "\n")
    for line in cell.splitlines():
        if not line.strip():
            continue
        m = _OPTION.match(line)
        if not m:
            raise OptionError(f"option line {line.strip()!r} has no letter; options are lines like 'A 内容'")
        if m.group(1) in options:
            raise OptionError(f"option letter {m.group(1)} appears twice")
        options[m.group(1)] = m.group(2).strip()
    return options


def canonical_answer(letters: str, options: dict[str, str]) -> str:
    """An answer as a set of letters in option order: "BA", "A,B" and "AB" are the same answer."""
    seen = set(letters.upper())
    return "".join(k for k in options if k in seen)


def gold_letters(answer: str, options: dict[str, str]) -> str:
    """A stored answer ("A", "a,d", "B、C") as canonical letters; "" when there is none. A letter that is not an
    option is a SchemaError, never dropped quietly."""
    answer = re.sub(r"[\s,，、]", "", answer or "").upper()
    if not answer:
        return ""
    if not re.fullmatch(r"[A-Z]+", answer) or any(ch not in options for ch in answer):
        raise SchemaError("answer_not_in_options", f"answer {answer!r}, options {''.join(options)}")
    return canonical_answer(answer, options)


def lettered(texts: list[str]) -> dict[str, str]:
    """Options given as a plain list, lettered A, B, ... in order."""
    if len(texts) > 26:
        raise SchemaError("no_options", f"{len(texts)} options; at most 26 can be lettered")
    return {chr(ord("A") + i): str(t) for i, t in enumerate(texts)}
