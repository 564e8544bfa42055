"""`medtrain report`: one report.md from training runs (loss curves, Figure 1) and eval results or sweeps
(tables in the shape of the paper's Tables 2 and 3)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medtrain.core.errors import UserError
from medtrain.core.publish import publish_text, staged_dir
from medtrain.eval.tables import results_table
from medtrain.experiments.paper import cells_from_results, cells_from_sweep, paper_section, table3
from medtrain.experiments.sweep import clean_rows
from medtrain.train.metrics import read_metrics


class ReportError(UserError):
    """Nothing reportable among the paths given."""


def plot_loss(run_dirs: list[Path], out: Path, title: str = "Training loss") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for run, label in zip(run_dirs, run_labels(run_dirs), strict=True):
        records = read_metrics(Path(run) / "metrics.jsonl")
        line, = ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=label, linewidth=1.2)
        val = [r for r in records if "val_loss" in r]
        if val:  # the held-out curve in the same colour, dashed, with its points marked
            ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], linestyle="--", marker="o",
                    markersize=3, color=line.get_color(), label=f"{label} (validation)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (token cross-entropy; unsmoothed)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.png")  # savefig picks the format from the suffix
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def run_labels(run_dirs: list[Path]) -> list[str]:
    """The shortest trailing parts of each run's path that tell the runs apart (two runs named `continual` in
    different sweeps get `a/continual` and `b/continual`)."""
    parts = [Path(r).resolve().parts for r in run_dirs]
    for k in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(r) for r in run_dirs]


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
