"""Prompt templates, named and versioned, shared by training (prep) and evaluation (eval imports this module).

The name and version go into every SFT manifest, so eval renders the exact prompt the model was taught and
parses the answer format it learned. Bump `version` whenever a string here changes.

Huatuo documents (continual): the question variants, de-duplicated in order, joined by " / " after "问：",
then "答：" and the answers joined by newlines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medtrain.core.errors import UserError

ALPACA_HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
)
MCQ_INSTRUCTION = "请回答下面的医学选择题，给出正确答案的选项字母。"
ANSWER_PREFIX = "答案: "
EXPLANATION_PREFIX = "解释: "


_OPTION = re.compile(r"^\s*([A-Z])(?:[\s.．、:：)）]+|$)(.*)$")


class OptionError(UserError):
    """An options cell that cannot be read; the message names the line."""


def parse_options(cell: str) -> dict[str, str]:
    """CMExam's Options cell, one "A 内容" line per option. Prep and eval read options with this one parser."""
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


def index_base(seen: set[int]) -> int | None:
    """0 or 1: what a file's numbered answers count from, read from the values it holds (MedMCQA's cop: the
    Hugging Face copy's 0-based ClassLabel, -1 on its unlabelled test split; the official release's 1-based
    index, 4 with four options). None when every value fits both (all 1-3): a caller must not guess."""
    zero, one = seen & {0, -1}, seen & {4}
    if zero and one:
        raise OptionError(f"answer indices {sorted(zero)} (counted from 0) and 4 (from 1) in one file; split it")
    if zero:
        return 0
    if one or not seen:
        return 1
    return None


MEDMCQA_OPTION_KEYS = ("opa", "opb", "opc", "opd", "ope")  # MedMCQA's four; CNMLEQA adds ope


def cop_of(rec: dict) -> int | None:
    """MedMCQA's answer index as a file stores it, a number or its digits ("3"); None when absent or not one."""
    cop = rec.get("cop")
    if isinstance(cop, bool):
        return None
    if isinstance(cop, int):
        return cop
    if isinstance(cop, str) and cop.strip().lstrip("-").isdigit():
        return int(cop.strip())
    return None


def medmcqa_answer(rec: dict, base: int) -> str:
    """The answer letter of a MedMCQA-layout record: `cop` counted from `base` (index_base reads it from the file),
    else CNMLEQA's "answer": "opX"; "" when neither names an option key (the unlabelled test split's -1)."""
    keys = MEDMCQA_OPTION_KEYS
    cop = cop_of(rec)
    if cop is not None and 0 <= cop - base < len(keys):
        return "ABCDE"[cop - base]
    answer = rec.get("answer")
    return "ABCDE"[keys.index(answer)] if isinstance(answer, str) and answer in keys else ""


def canonical_answer(letters: str, options: dict[str, str]) -> str:
    """An answer as a set of letters in option order: "BA", "A,B" and "AB" are the same answer."""
    seen = set(letters.upper())
    return "".join(k for k in options if k in seen)


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    with_reasoning: bool
    alpaca: bool = True

    def prompt(self, question: str, options: dict[str, str]) -> str:
        body = f"问题: {question}\n选项:\n" + "\n".join(f"{k} {v}" for k, v in options.items())
        if not self.alpaca:
            return body + "\n" + ANSWER_PREFIX.rstrip()
        return f"{ALPACA_HEADER}### Instruction:\n{MCQ_INSTRUCTION}\n\n### Input:\n{body}\n\n### Response:\n"

    def response(self, answer: str, explanation: str = "") -> str:
        out = f"{ANSWER_PREFIX}{answer}"
        if self.with_reasoning and explanation.strip():
            out += f"\n{EXPLANATION_PREFIX}{explanation.strip()}"
        return out

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version}


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("cmexam_answer_only", 1, with_reasoning=False),
        Template("cmexam_with_reasoning", 1, with_reasoning=True),
        Template("plain_mcq", 1, with_reasoning=False, alpaca=False),  # base models: no instruction format
    )
}
MODE_TEMPLATES = {"answer_only": "cmexam_answer_only", "with_reasoning": "cmexam_with_reasoning"}


def mode_of(template_name: str) -> str | None:
    """The prep `--mode` that gives a template (MODE_TEMPLATES read backwards); None for another template."""
    return next((mode for mode, name in MODE_TEMPLATES.items() if name == template_name), None)


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise KeyError(f"unknown template '{name}'; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def render_huatuo(questions: list[str], answers: list[str]) -> str:
    seen: dict[str, None] = {}
    for q in questions:
        q = q.strip()
        if q:
            seen.setdefault(q, None)
    return "问：" + " / ".join(seen) + "\n答：" + "\n".join(a.strip() for a in answers if a.strip())
