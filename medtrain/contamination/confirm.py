"""A candidate becomes a finding when the question's text and the training span it would cover read alike:
Levenshtein's ratio over the decoded texts, so a near copy (an edited word, other punctuation) counts as the
copy it is, and a document sharing one stock phrase with a question does not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import Levenshtein
import numpy as np

from medtrain.contamination.scan import Candidates

NUDGE = 2


@dataclass(frozen=True)
class Finding:
    question: int
    dataset: int
    doc: int
    span: tuple[int, int]
    """Token offsets within the document, end exclusive."""
    windows: int
    ratio: float
    train_text: str


def confirm(candidates: Candidates, question_texts: list[str], docs: list[Callable[[int], np.ndarray]],
            decode: Callable[[np.ndarray], str], min_ratio: float) -> dict[int, Finding]:
    """The best-reading candidate of each question whose ratio reaches `min_ratio`."""
    found: dict[int, Finding] = {}
    for question, keys in candidates.by_question().items():
        best = None
        for dataset, _, doc in keys:
            c = candidates.pairs[(dataset, question, doc)]
            first = int(candidates.offsets[dataset][doc])
            finding = _read(question_texts[question], docs[dataset](doc), (c.start - first, c.stop - first),
                            decode, Finding(question, dataset, doc, (0, 0), c.windows, 0.0, ""))
            if best is None or finding.ratio > best.ratio:
                best = finding
        if best is not None:
            best = _nudged(question_texts[question], docs[best.dataset](best.doc), decode, best)
        if best is not None and best.ratio >= min_ratio:
            found[question] = best
    return found


def _read(question: str, tokens: np.ndarray, span: tuple[int, int], decode: Callable[[np.ndarray], str],
          finding: Finding) -> Finding:
    a, b = max(span[0], 0), min(span[1], len(tokens))
    text = decode(tokens[a:b]) if b > a else ""
    return replace(finding, span=(a, b), ratio=Levenshtein.ratio(question, text), train_text=text)


def _nudged(question: str, tokens: np.ndarray, decode: Callable[[np.ndarray], str], finding: Finding) -> Finding:
    """The span moved by up to NUDGE tokens at either end, for the best reading: a question encoded alone can
    start with other tokens than the same words inside a document (a word-start marker, a merged byte)."""
    a, b = finding.span
    tries = [_read(question, tokens, (a + da, b + db), decode, finding)
             for da in range(-NUDGE, NUDGE + 1) for db in range(-NUDGE, NUDGE + 1)]
    return max(tries, key=lambda f: (f.ratio, -abs(f.span[1] - f.span[0] - (b - a))))
