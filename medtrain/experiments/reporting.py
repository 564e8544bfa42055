"""`medtrain report`: one report.md from training runs (loss curves, Figure 1) and eval results or sweeps
(tables in the shape of the paper's Tables 2 and 3)."""

from __future__ import annotations

import json
from pathlib import Path

from medtrain.core.errors import UserError
from medtrain.core.publish import publish_text, staged_dir
from medtrain.eval.tables import results_table
from medtrain.experiments.paper import cells_from_results, cells_from_sweep, paper_section, table3
from medtrain.experiments.sweep import clean_rows
from medtrain.train.loss_curve import plot_loss


class ReportError(UserError):
    """Nothing reportable among the paths given."""


def find_results(path: Path) -> list[dict]:
    out = []
    for f in sorted(Path(path).rglob("results.json")):
        out.append(json.loads(f.read_text()))  # rows group by model, so a model's three evals share one row
    return out


def build_report(paths: list[Path], out: Path, paper: bool = False) -> Path:

    out = Path(out)
    runs = [p for p in paths if (p / "metrics.jsonl").is_file()]
    sweeps = [p for p in paths if (p / "sweep.json").is_file()]
    results = [r for p in paths if p not in runs and p not in sweeps for r in find_results(p)]
    if not (runs or sweeps or results):
        raise ReportError(f"nothing to report in {', '.join(map(str, paths))}: pass training run directories "
                                "(metrics.jsonl), sweep directories (sweep.json) or eval outputs (results.json)")
    lines = ["# medtrain report", ""]
    for s in sweeps:
        summary = json.loads((s / "sweep.json").read_text())
        lines += [f"## Continual pretraining checkpoints x SFT (Table 3) — {s}", "",
                  f"continual run `{summary['continual']}`, SFT recipe `{summary['sft_recipe']}`", ""]
        lines += [table3(summary["rows"]), ""]
        if summary.get("contamination"):
            lines += [f"Clean subsets: the same evaluations without the questions in `{summary['contamination']}` "
                      "(`medtrain contamination` over the training data)", "", table3(clean_rows(summary["rows"])),
                      ""]
    if results:
        lines += ["## Evaluations", "", results_table(results), ""]
    if paper:

        cells = [c for s in sweeps for c in cells_from_sweep(json.loads((s / "sweep.json").read_text())["rows"])]
        lines += paper_section(cells + cells_from_results(results))
    with staged_dir(out, kind="report") as tmp:  # a report dir is replaced whole, never half-written
        if runs:
            png = plot_loss(runs, tmp / "loss_curve.png", title="Training loss (Figure 1)")
            lines += ["## Loss curve (Figure 1)", "", f"![loss curve]({png.name})", ""]
            for run in runs:
                last = (run / "metrics.jsonl").read_text().strip().splitlines()[-1]
                rec = json.loads(last)
                val = f", validation loss {rec['val_loss']:.4f}" if "val_loss" in rec else ""
                lines.append(f"- `{run}`: {rec['step']} steps, final loss {rec['loss']:.4f}{val}, "
                             f"{rec['tokens_per_s']:,.0f} tokens/s")
            lines.append("")
        publish_text(tmp / "report.md", "\n".join(lines))
    return out / "report.md"
