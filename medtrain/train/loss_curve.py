"""The loss curve of one or more runs as a PNG (Figure 1 of the paper): the report draws it, and a finished run
hands it to its tracking servers."""

from __future__ import annotations

import os
from pathlib import Path

from medtrain.train.metrics import read_metrics


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
