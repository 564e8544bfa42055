"""`medtrain report --paper`: the paper's Tables 2-4 (experiments/guo_hua_2023.yaml, transcribed with its source)
beside the cells of a run that match them — same model family, continual step, SFT mode and SFT data — with the
difference, and the conventions each side used: ours from results.json, the paper's as it states them ("not
stated" where it does not). A cell with no counterpart in the paper is listed as such, never paired with a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from medtrain.core.hub import source_label
from medtrain.core.provenance import continual_step_in
from medtrain.core.templates import mode_of
from medtrain.eval.tables import TASK_ORDER, convention, model_label

PAPER = Path(__file__).resolve().parent / "guo_hua_2023.yaml"
METRICS = (("cmexam_acc", "CMExam Acc"), ("cmexam_f1", "CMExam F1"), ("mmlu_acc", "MMLU Acc"),
           ("cmmlu_acc", "CMMLU Acc"))
SOURCE_NAMES = {"cmexam": "CMExam", "medqa": "MedQA", "medmcqa": "MedMCQA"}
PAPER_COLUMNS = tuple(name for _, name in METRICS)
"""Tables 2 and 3's columns, in the paper's order."""


def paper_columns(results: list[dict]) -> dict[str, float]:
    """The paper's four columns (Tables 2/3) from one model's results (one result per benchmark)."""
    row: dict[str, float] = {}
    for r in results:
        if r["task"] == "cmexam":
            row["CMExam Acc"], row["CMExam F1"] = r["metrics"]["acc"], r["metrics"]["weighted_f1"]
        else:
            row[f"{r['task'].upper()} Acc"] = r["metrics"]["acc"]
    return row


def conventions(results: list[dict]) -> str:
    """The rules behind a row of paper columns: 'CMExam: hard extraction, 6,811 q; MMLU: ...'."""
    named = sorted(results, key=lambda r: TASK_ORDER.get(r["task"], 9))
    return "; ".join(f"{'CMExam' if r['task'] == 'cmexam' else r['task'].upper()}: {convention(r)}" for r in named)


def paper_cells(row: dict[str, float]) -> str:
    return " | ".join(f"{row[c]:.2f}" if c in row else "-" for c in PAPER_COLUMNS)


def table3(rows: list[dict]) -> str:
    """The paper's Table 3, with the rules behind each row's numbers: base and continual-only models are read
    with `paper` extraction, SFT models with `hard`, and a --limit shows as fewer questions."""
    lines = ["| continual steps | SFT | " + " | ".join(PAPER_COLUMNS) + " | conventions | lineage |",
             "|---:|:-:|" + "---:|" * len(PAPER_COLUMNS) + "---|---|"]
    for r in rows:
        numbers = paper_cells(r.get("metrics") or paper_columns(r["results"]))
        rules = r.get("conventions") or (conventions(r["results"]) if "results" in r else "-")
        lines.append(f"| {r['step']} | {'yes' if r['sft'] else 'no'} | {numbers} | {rules} | "
                     f"{lineage_label(r['model'])} |")
    return "\n".join(lines) + "\n"


def lineage_label(model: str) -> str:
    """A row name from the model's lineage: stage, step, and the short hash of the data it saw."""
    path = Path(model) / "lineage.json"
    if not path.is_file():
        return Path(model).name
    lin = json.loads(path.read_text())
    parts = []
    while lin:
        data = lin.get("datasets") or []
        tag = f"{lin.get('stage')}@{lin.get('step')}"
        if data:
            tag += f" [{data[0]['manifest_sha256'][:8]}]"
        parts.append(tag)
        lin = lin.get("base_lineage")
    return " <- ".join(parts)


@dataclass
class Cell:
    """One of our models with its paper-column numbers and where it sits in the paper's design."""
    model: str
    numbers: dict[str, float]  # keys of METRICS
    conventions: str
    family: str | None
    step: int | None
    sft: str | None  # None, "answer_only" or "with_reasoning"
    sft_data: str | None  # "CMExam", "CMExam+MedQA+MedMCQA", ...
    base: str = ""  # the base model the lineage starts from


def load_paper() -> dict:
    return yaml.safe_load(PAPER.read_text(encoding="utf-8"))


def family(lineage: dict) -> tuple[str | None, str]:
    """The paper's model family of the model a lineage chain starts from, and that base model's name."""
    while lineage.get("base_lineage"):
        lineage = lineage["base_lineage"]
    base = source_label(lineage.get("base_source")) or str(lineage.get("base_model", ""))
    name = base.lower().replace("_", "-")
    if re.search(r"chinese-?llama-?2-13b", name):
        return "Chinese-Llama-2-13B", base
    if re.search(r"llama-?2-13b", name):
        return "Llama-2-13B", base
    return None, base


def _lineage(model: str) -> dict:
    try:
        return json.loads((Path(model) / "lineage.json").read_text())
    except (OSError, ValueError):
        return {}


def _sft_data(lineage: dict) -> str | None:
    for data in lineage.get("datasets") or []:
        try:
            manifest = json.loads((Path(data["path"]) / "manifest.json").read_text())
        except (OSError, ValueError, KeyError):
            continue
        kinds = [s.get("source_type") for s in manifest.get("sources", [])] if manifest.get("source_type") == "mix" \
            else [manifest.get("source_type")]
        order = list(SOURCE_NAMES)
        kinds = sorted({k for k in kinds if k}, key=lambda k: order.index(k) if k in order else len(order))
        return "+".join(SOURCE_NAMES.get(k, str(k)) for k in kinds) or None
    return None


def continual_step(lineage: dict) -> int:
    """Where in the paper's continual axis a model sits, read from its lineage chain: an SFT model's recorded
    start (sweep cells and SFT runs record it), else the nearest continual run it descends from; 0 for a model
    with no continual pretraining (a base model)."""
    sft = lineage.get("stage") == "sft"
    if sft and lineage.get("continual_checkpoint_step") is not None:
        return int(lineage["continual_checkpoint_step"])
    return continual_step_in(lineage.get("base_lineage") if sft else lineage) or 0


def cell_of(model: str, numbers: dict[str, float], conventions: str, step: int | None, sft: bool,
            label: str | None = None) -> Cell:
    lineage = _lineage(model)
    fam, base = family(lineage)
    mode = None
    if sft:
        name = (lineage.get("template") or {}).get("name", "")
        mode = mode_of(name) or name or None
    return Cell(label or model, numbers, conventions, fam, step, mode, _sft_data(lineage) if sft else None, base)


def _keyed(columns: dict[str, float]) -> dict[str, float]:
    """eval.tables' paper columns ("CMExam Acc", ...) under this file's keys ("cmexam_acc", ...)."""
    return {k: columns[name] for k, name in METRICS if name in columns}


def cells_from_sweep(rows: list[dict]) -> list[Cell]:

    return [cell_of(r["model"], _keyed(r.get("metrics") or paper_columns(r["results"])),
                    r.get("conventions") or conventions(r["results"]), r["step"], r["sft"]) for r in rows]


def cells_from_results(results: list[dict]) -> list[Cell]:
    """Eval outputs grouped by model; step and SFT read from each model's lineage (a model without one is a base
    model: step 0, no SFT)."""

    by_model: dict[str, list[dict]] = {}
    for r in results:
        by_model.setdefault(str(r.get("model") or "?"), []).append(r)
    cells = []
    for model, rs in by_model.items():
        lineage = _lineage(model)
        cells.append(cell_of(model, _keyed(paper_columns(rs)), conventions(rs), continual_step(lineage),
                             lineage.get("stage") == "sft", label=model_label(rs[0])))
    return cells


def matches(cell: Cell, paper: dict) -> list[tuple[str, dict]]:
    """(table, paper row) pairs this cell corresponds to."""
    if cell.family is None:
        return []
    out = []
    for row in paper["table2"]:
        if row["model"] == cell.family and cell.step == 0 and row["sft"] == cell.sft \
                and (cell.sft is None or cell.sft_data == "CMExam"):
            out.append(("Table 2", row))
    if cell.sft == "with_reasoning" and cell.sft_data == "CMExam":
        out += [("Table 3", r) for r in paper["table3"] if r["model"] == cell.family and r["step"] == cell.step]
    if cell.sft == "with_reasoning":
        out += [("Table 4", r) for r in paper["table4"]
                if r["model"] == cell.family and r["step"] == cell.step and r["sft_data"] == cell.sft_data]
    return out


def _pair(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "-" if ours is None else f"{ours:.1f} / -"
    return f"{ours:.1f} / {theirs:.1f} ({ours - theirs:+.1f})"


def paper_section(cells: list[Cell]) -> list[str]:
    """report.md lines: our matching cells beside the paper's rows, then the cells without a counterpart."""
    paper = load_paper()
    lines = [f"## Beside the paper ({paper['source']})", "",
             "Each number is ours / the paper's (difference). The paper's conventions: "
             + "; ".join(f"{k}: {v}" for k, v in paper["conventions"].items()) + ".", ""]
    header = ["our model", "paper row", *[name for _, name in METRICS], "our conventions"]
    table = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(METRICS) + "---|"]
    unmatched = []
    for cell in cells:
        found = matches(cell, paper)
        if not found:
            unmatched.append(cell)
        for name, row in found:
            where = f"{name}: {row['model']}" + (f", step {row['step']}" if "step" in row else "") + \
                (f", {row['sft_data']}" if "sft_data" in row else "") + \
                (f", SFT {row['sft'] or 'none'}" if name == "Table 2" else "")
            table.append(f"| {cell.model} | {where} | "
                         + " | ".join(_pair(cell.numbers.get(k), row.get(k)) for k, _ in METRICS)
                         + f" | {cell.conventions} |")
    lines += table if len(table) > 2 else ["No cell of this report has a counterpart in the paper."]
    if unmatched:
        lines += ["", "Cells without a counterpart in the paper (its rows are Llama-2-13B and Chinese-Llama-2-13B at "
                  "continual steps 0, 750, 1500, 2250, 3000):", ""]
        lines += [f"- {c.model}: model family {c.family or 'not one of the paper’s'}"
                  f"{f' (base {c.base})' if c.base and not c.family else ''}, step {c.step}, SFT "
                  f"{c.sft or 'none'}{' on ' + c.sft_data if c.sft_data else ''}" for c in unmatched]
    return [*lines, ""]
