"""Prompt templates, named and versioned, shared by training (prep) and evaluation (eval imports this module).

The name and version go into every SFT manifest, so eval renders the exact prompt the model was taught and
parses the answer format it learned. Bump `version` whenever a string here changes.

Huatuo documents (continual): the question variants, de-duplicated in order, joined by " / " after "问：",
then "答：" and the answers joined by newlines.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPACA_HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
)
MCQ_INSTRUCTION = "请回答下面的医学选择题，给出正确答案的选项字母。"
ANSWER_PREFIX = "答案: "
EXPLANATION_PREFIX = "解释: "


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
