"""Answer extraction from generated text, each rule recorded per question.

hard   - the format the SFT template taught: "答案: ABD".
paper  - Guo & Hua (2023) for base models: (1) option letters in the output, (2) option texts found in it
         (case-insensitive), (3) the option whose text is closest (Levenshtein) to the output's first line.
cmexam - CMExam's published parser: every option whose letter or text occurs in the output (only the first
         line when the output holds 解释), letters in option order.
Nothing found, or an empty output, is "no answer" (无答案): never silently a wrong letter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import Levenshtein

from medtrain.core.benchmarks.record import canonical_answer

NO_ANSWER = "无答案"
MODES = ("hard", "paper", "cmexam")
# letters joined by 和/与/及/或/、/commas/slashes/"and"/spaces are one answer: "答案是A和D" is AD, not A
_SEP = r"(?:\s*(?:[和与及或、,，/／&;；]|(?i:and))\s*|\s+)?"
_HARD = re.compile(rf"答案\s*[:：]\s*([A-Z](?:{_SEP}[A-Z])*)(?![A-Za-z])")
_LETTERS = re.compile(rf"(?<![A-Za-z])([A-E](?:{_SEP}[A-E])*)(?![A-Za-z])")
_AND = re.compile(r"(?i)and")


def _letters(span: str, options: dict[str, str]) -> str:
    """The option letters of a matched span, separators (and the letters of "and") left out."""
    return canonical_answer("".join(re.findall(r"[A-Z]", _AND.sub(" ", span))), options)


@dataclass
class Extraction:
    answer: str
    """Canonical letters, or the task's no-answer label."""
    rule: str


def extract(output: str, options: dict[str, str], mode: str, no_answer: str = NO_ANSWER) -> Extraction:
    if not output or not output.strip():
        return Extraction(no_answer, "empty")
    if mode == "hard":
        m = _HARD.search(output)
        got = _letters(m.group(1), options) if m else ""
        return Extraction(got, "hard") if got else Extraction(no_answer, "hard:none")
    if mode == "paper":
        return _paper(output, options, no_answer)
    if mode == "cmexam":
        text = output.split("\n")[0] if "解释" in output else output
        got = "".join(k for k, v in options.items() if k in text or (v and v in text))
        return Extraction(got, "cmexam") if got else Extraction(no_answer, "cmexam:none")
    raise ValueError(f"unknown extraction mode {mode!r}; one of {', '.join(MODES)}")


def _paper(output: str, options: dict[str, str], no_answer: str) -> Extraction:
    m = _HARD.search(output) or _LETTERS.search(output)
    if m:
        got = _letters(m.group(1), options)
        if got:
            return Extraction(got, "paper:letters")
    lowered = output.lower()
    found = "".join(k for k, v in options.items() if v and v.lower() in lowered)
    if found:
        return Extraction(found, "paper:text")
    first = output.strip().split("\n")[0]
    if not first or not options:
        return Extraction(no_answer, "paper:none")
    best = min(options, key=lambda k: (Levenshtein.distance(first, options[k]), k))
    return Extraction(best, "paper:levenshtein")
