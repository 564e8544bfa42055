"""`medtrain report`: the loss curve of one or more runs (the paper's Figure 1) as PNG."""

from __future__ import annotations

import os
from pathlib import Path

from medtrain.metrics import read_metrics


def plot_loss(run_dirs: list[Path], out: Path, title: str = "Training loss") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for run in run_dirs:
        records = read_metrics(Path(run) / "metrics.jsonl")
        ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=Path(run).name, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
