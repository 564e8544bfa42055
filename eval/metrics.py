"""CMExam's published metrics: exact-match accuracy and weighted F1 over answer strings (无答案 its own class),
computed as scikit-learn's precision_recall_fscore_support(average="weighted") does."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable


def accuracy(gold: list[str], pred: list[str]) -> float:
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0


def weighted_f1(gold: list[str], pred: list[str]) -> float:
    """F1 per label (labels = every string seen in gold or pred), averaged with gold support as weight.

    Labels never in gold have weight 0; 0/0 precision or recall count as 0 (scikit-learn's zero_division)."""
    support = Counter(gold)
    predicted = Counter(pred)
    hits = Counter(g for g, p in zip(gold, pred, strict=True) if g == p)
    total = sum(support.values())
    if not total:
        return 0.0
    score = 0.0
    for label, n in support.items():
        tp = hits[label]
        precision = tp / predicted[label] if predicted[label] else 0.0
        recall = tp / n
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        score += n * f1
    return score / total


def breakdown(gold: list[str], pred: list[str], groups: list[str]) -> dict[str, dict]:
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    return {g: {"n": len(ix), "acc": accuracy([gold[i] for i in ix], [pred[i] for i in ix])}
            for g, ix in sorted(by.items())}


METRICS: dict[str, Callable[[list[str], list[str]], float]] = {"acc": accuracy, "weighted_f1": weighted_f1}
"""What a task's `metrics:` list may name."""


def score(names: tuple[str, ...], gold: list[str], pred: list[str]) -> dict[str, float]:
    """The named metrics in percent."""
    return {name: 100 * METRICS[name](gold, pred) for name in names}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
