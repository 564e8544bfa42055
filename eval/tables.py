"""Results as paper-shaped tables that never mix numbers which are not comparable.

A number depends on more than the model: CMExam on the extraction rule, MMLU/CMMLU on the scoring convention
and the shots, all of them on the questions (a --limit run is not the full benchmark) and the data file. Results
that differ in any of these land in different, labelled columns; the label always says the rule, the
convention, the shots and the question count behind the number.
"""

from __future__ import annotations

from medtrain.core.digest import sha256_json, sha256_text
from medtrain.core.hub import source_label

TASK_ORDER = {"cmexam": 0, "mmlu": 1, "cmmlu": 2}


def model_label(results: dict) -> str:
    """How a table names the model of a results.json: `hub_id@revision` for a hub snapshot, else its path."""
    return source_label(results.get("model_source")) or str(results.get("model") or results.get("predictions_file")
                                                             or "?")


def convention(r: dict) -> str:
    """What the number depends on besides the model, in words."""
    n = f"{r['metrics']['n']:,} q"
    if "excluded" in r:  # the clean subset: a column of its own beside the full benchmark's
        n += f", clean: {r['excluded']['questions']:,} contaminated left out"
    if r["task"] == "cmexam":
        return f"{r['extract']} extraction, {n}"
    return f"{r['scoring']} scoring, {r['shots']}-shot, {n}"


def data_tag(r: dict) -> str:
    """A short hash of the exact data files behind a result."""
    sha = r.get("data", {}).get("sha256")
    return (sha256_text(sha) if isinstance(sha, str) else sha256_json(sha))[:8]


def _cells(r: dict, label: str) -> dict[str, float]:
    m = r["metrics"]
    if r["task"] == "cmexam":
        return {f"CMExam Acc ({label})": m["acc"], f"CMExam F1 ({label})": m["weighted_f1"]}
    return {f"{r['task'].upper()} Acc ({label})": m["acc"]}


def results_table(results: list[dict]) -> str:
    """One row per model; one column per benchmark and convention (and data, when two data files appear)."""
    tags: dict[tuple[str, str], set[str]] = {}
    for r in results:
        tags.setdefault((r["task"], convention(r)), set()).add(data_tag(r))
    rows: dict[str, dict[str, float]] = {}
    order: dict[str, tuple] = {}
    for r in results:
        label = convention(r)
        if len(tags[(r["task"], label)]) > 1:
            label += f", data {data_tag(r)}"
        name = model_label(r)
        for column, value in _cells(r, label).items():
            rows.setdefault(name, {})[column] = value
            order.setdefault(column, (TASK_ORDER.get(r["task"], 9), column))
    columns = sorted(order, key=order.get)
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:.2f}" if c in row else "-" for c in columns) + " |"
              for name, row in rows.items()]
    return "\n".join(lines) + "\n"
