"""What users watch: one line per log step on rank 0's console, the same record in metrics.jsonl, and
TensorBoard scalars."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medtrain.core.flops import flops_per_token, utilisation
from medtrain.core.log import fmt_seconds, get_logger
from medtrain.core.model_specs import LlamaShape
from medtrain.core.publish import publish_text
from medtrain.train.tracking import Trackers, scalars

if TYPE_CHECKING:  # the class lives with the torch loss; this module stays importable without torch (reporting)
    from medtrain.train.loss import LossReduction

log = get_logger(__name__)


class MetricsLogger:
    """Rank 0's records: metrics.jsonl always, TensorBoard and the tracking servers `report_to` names."""

    def __init__(self, out_dir: Path, enabled: bool, report_to: tuple[str, ...] | list[str] = ("tensorboard",),
                 params: dict | None = None):
        self.enabled, self.out_dir = enabled, out_dir
        self.path = out_dir / "metrics.jsonl"
        self._tb = None
        self._tb_dir = out_dir / "tensorboard"
        self.trackers: Trackers | None = None
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            if "tensorboard" in report_to:
                self._open_tensorboard()
            self.trackers = Trackers(list(report_to), out_dir, params or {})

    def _open_tensorboard(self, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self._tb_dir), purge_step=purge_step)
        except ImportError:  # tensorboard is a dependency; keep training if an install lacks it
            log.warning("warning: tensorboard not installed; metrics go to metrics.jsonl only")

    def rewind(self, step: int) -> None:
        """A resumed run logs again the steps after its checkpoint at `step`: what was logged after it is dropped
        (metrics.jsonl rewritten beside itself and renamed; TensorBoard's purge_step), so every step is recorded
        once, by the run that the weights continue."""
        if not self.enabled:
            return
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
            if len(kept) != len(lines):
                publish_text(self.path, "".join(kept))
                log.info(f"medtrain: metrics.jsonl: dropped {len(lines) - len(kept)} record(s) after step {step}, "
                         "logged before the run stopped; they are logged again as the run repeats them")
        if self._tb is not None:
            self._tb.close()
            self._open_tensorboard(purge_step=step + 1)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for name, value in scalars(record).items():
                self._tb.add_scalar(name, value, record["step"])
            self._tb.flush()
        if self.trackers is not None:
            self.trackers.log(record)
        scale = f" scale {record['loss_scale']:g} skipped {record['skipped_steps']}" if "loss_scale" in record else ""
        if "tflops_per_gpu" in record:
            mfu = f" MFU {100 * record['mfu']:.1f}% HFU {100 * record['hfu']:.1f}%" if "mfu" in record else ""
            scale += f" {record['tflops_per_gpu']:.3g} TFLOP/s/GPU{mfu}"
        log.info(f"step {record['step']}/{record['total_steps']} loss {record['loss']:.4f} lr {record['lr']:.3e}"
                 f"{scale} gnorm {record['grad_norm']:.3f} {record['tokens_per_s']:,.0f} tok/s "
                 f"{record['samples_per_s']:.2f} samples/s data {100 * record['data_wait_frac']:.2f}% "
                 f"elapsed {fmt_seconds(record['elapsed_s'])} eta {fmt_seconds(record['eta_s'])}"
                 + (f" val_loss {record['val_loss']:.4f} ({record['val_tokens']:,} tokens)" if "val_loss" in record
                    else ""))

    def close(self, artifacts: list[Path] | None = None) -> None:
        """`artifacts`: files the tracking servers also get (a finished run's loss curve and records)."""
        if self._tb is not None:
            self._tb.close()
        if self.trackers is not None:
            self.trackers.finish(artifacts or [])


@dataclass
class Window:
    """This rank's sums since the last log line."""
    steps: int = 0
    loss: float = 0.0
    """Sum over steps of the summed token losses (token-weighted), or of the step's mean micro-batch loss."""
    labels: int = 0
    """Labelled tokens (those that carry loss)."""
    tokens: int = 0
    """Attended (non-padding) tokens."""
    samples: int = 0
    """Real samples (ghost slots of an epoch's last step not counted)."""
    seconds: float = 0.0
    data_seconds: float = 0.0
    """Of which spent collating batches."""


class StepMetrics:
    """Loss, throughput and timing of the steps between two log lines, summed over ranks with one all-reduce
    per log step (a collective per step would cost more than the tiny runs' steps)."""

    def __init__(self, logger: MetricsLogger, world: int, start_step: int, total_steps: int, steps_per_epoch: int,
                 shape: LlamaShape | None = None, recompute: bool = False, peak_tflops: float = 0.0,
                 *, reduction: LossReduction):
        self.logger, self.world, self.reduction = logger, world, reduction
        self.shape, self.recompute, self.peak_tflops = shape, recompute, peak_tflops
        self.start_step, self.total_steps, self.steps_per_epoch = start_step, total_steps, steps_per_epoch
        self.window = Window()
        self.t_start = time.perf_counter()

    def add(self, loss: float, labels: int, tokens: int, samples: int, seconds: float, data_seconds: float) -> None:
        """`loss`: this rank's summed token losses (token-weighted), or its mean micro-batch loss (micro_batch)."""
        w = self.window
        w.steps += 1
        w.loss += loss
        w.labels += labels
        w.tokens += tokens
        w.samples += samples
        w.seconds += seconds
        w.data_seconds += data_seconds

    def flush(self, done_steps: int, lr: float, grad_norm: float | None, extra: dict | None = None) -> dict:
        """All ranks call this at the same step; rank 0 writes the record."""
        import torch
        import torch.distributed as dist
        from deepspeed.accelerator import get_accelerator

        w = self.window
        sums = torch.tensor([w.loss, w.labels, w.tokens, w.samples], dtype=torch.float64,
                            device=get_accelerator().current_device_name())
        dist.all_reduce(sums)
        loss_sum, all_labels, all_tokens, all_samples = sums.tolist()
        elapsed = time.perf_counter() - self.t_start
        loss = self.reduction.logged(loss_sum, all_labels, self.world, w.steps)
        record = {"step": done_steps, "total_steps": self.total_steps, "loss": loss,
                  "lr": lr, "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                  "tokens_per_s": all_tokens / w.seconds, "samples_per_s": all_samples / w.seconds,
                  "data_wait_frac": w.data_seconds / max(w.seconds, 1e-9), "elapsed_s": elapsed,
                  "eta_s": elapsed / (done_steps - self.start_step) * (self.total_steps - done_steps),
                  "epoch": (done_steps - 1) // self.steps_per_epoch, **(extra or {})}
        accelerator = get_accelerator()
        if accelerator.device_name() != "cpu":  # the figure `medtrain plan` predicts, per GPU
            record["max_mem_gib"] = accelerator.max_memory_allocated() / 2**30
        if self.shape is not None and all_samples:
            flops = flops_per_token(self.shape, all_tokens / all_samples, self.recompute)
            record.update(utilisation(record["tokens_per_s"], self.world, flops, self.peak_tflops))
        self.logger.log(record)
        self.window = Window()
        return record


def read_metrics(path: Path) -> list[dict]:
    """The last record of each step (a resumed run re-logs the steps after its checkpoint)."""
    by_step: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[k] for k in sorted(by_step)]
