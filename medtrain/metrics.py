"""What users watch: one line per log step on rank 0's console, the same record in metrics.jsonl, and
TensorBoard scalars."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class MetricsLogger:
    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self._tb = None
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency; keep training if an install lacks it
                print("warning: tensorboard not installed; metrics go to metrics.jsonl only", file=sys.stderr)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(f"train/{k}", v, record["step"])
            self._tb.flush()
        scale = f" scale {record['loss_scale']:g} skipped {record['skipped_steps']}" if "loss_scale" in record else ""
        print(f"step {record['step']}/{record['total_steps']} loss {record['loss']:.4f} lr {record['lr']:.3e}"
              f"{scale} gnorm {record['grad_norm']:.3f} {record['tokens_per_s']:,.0f} tok/s "
              f"{record['samples_per_s']:.2f} samples/s data {100 * record['data_wait_frac']:.2f}% "
              f"elapsed {fmt_seconds(record['elapsed_s'])} eta {fmt_seconds(record['eta_s'])}", flush=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict]:
    """The last record of each step (a resumed run re-logs the steps after its checkpoint)."""
    by_step: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[k] for k in sorted(by_step)]
