"""`medtrain status RUN_DIR`: where a run stands, read from the files it keeps — no process of the run is asked.

The lock says whether a launch (or a detached Slurm job) still holds the run; metrics.jsonl the steps, losses and
rates; restarts.jsonl every restart and how the run last ended; heartbeats/ each rank's last sign of life; the
checkpoints' manifests the newest one `--resume` would take. So it reads a running, finished, failed or detached
run alike, from any machine that sees the run directory."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medtrain.core.checkpoint_files import newest_good, step_of
from medtrain.core.errors import UserError
from medtrain.core.heartbeat import read_beats
from medtrain.core.log import fmt_seconds
from medtrain.launch.run_lock import LOCK_NAME, is_alive, read_holder
from medtrain.launch.slurm import job_state

EXIT_CODES = {"finished": 0, "failed": 1, "running": 3, "queued": 3, "stopped": 4, "not started": 5, "unknown": 6}
"""What `medtrain status` exits with: 0 finished, 1 failed, 3 running or queued, 4 stopped (resumable), 5 not
started yet, 6 a detached Slurm job this machine cannot ask about (2 stays a user error: not a run
directory)."""
STALE_AFTER_S = 300.0
"""A running rank's heartbeat older than this (or than the recipe's hang_timeout, when set) is marked stale."""
SPARKS = "▁▂▃▄▅▆▇█"


class StatusError(UserError):
    """Not a run directory."""


@dataclass
class RankBeat:
    rank: int
    host: str
    phase: str
    step: int
    age_s: float
    stale: bool


@dataclass
class RunStatus:
    run_dir: Path
    stage: str
    state: str
    why: str
    step: int = 0
    total: int = 0
    elapsed_s: float | None = None
    eta_s: float | None = None
    loss: float | None = None
    val_loss: float | None = None
    losses: list[float] = field(default_factory=list)
    tokens_per_s: float | None = None
    mfu: float | None = None
    restarts: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    beats: list[RankBeat] = field(default_factory=list)
    slurm: tuple[str, str] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line being written as we read
    return rows


def read_status(run_dir: Path, now: float | None = None) -> RunStatus:
    run_dir, now = Path(run_dir), now or time.time()
    if not (run_dir / "recipe.yaml").is_file():
        raise StatusError(f"{run_dir}: no recipe.yaml, so not a run directory (`medtrain launch` writes one into "
                          "the recipe's output_dir)")
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")) or {}
    metrics = _jsonl(run_dir / "metrics.jsonl")
    status = RunStatus(run_dir, str(recipe.get("stage", "?")), "not started", "nothing trained yet")
    _progress(status, metrics)
    status.restarts = _jsonl(run_dir / "restarts.jsonl")
    status.checkpoint = newest_good(run_dir / "checkpoints", deep=False)
    stale_after = float(recipe.get("hang_timeout") or STALE_AFTER_S)
    status.beats = [RankBeat(b.rank, b.host, b.phase, b.step, now - b.time,
                             b.phase != "exited" and now - b.time > stale_after)
                    for _, b in sorted(read_beats(run_dir / "heartbeats").items())]
    status.state, status.why = _state(status, run_dir)
    return status


def _progress(status: RunStatus, metrics: list[dict]) -> None:
    steps = [m for m in metrics if "loss" in m]
    if not steps:
        return
    last = steps[-1]
    status.step, status.total = int(last["step"]), int(last.get("total_steps", 0))
    status.elapsed_s, status.eta_s = last.get("elapsed_s"), last.get("eta_s")
    status.loss, status.tokens_per_s, status.mfu = last["loss"], last.get("tokens_per_s"), last.get("mfu")
    status.val_loss = next((m["val_loss"] for m in reversed(metrics) if "val_loss" in m), None)
    status.losses = [m["loss"] for m in steps]


def _state(status: RunStatus, run_dir: Path) -> tuple[str, str]:
    """(state, why): a live holder of the lock first, then how the run last ended."""
    holder = read_holder(run_dir / LOCK_NAME)
    if holder is not None and holder.slurm_job:
        try:
            state, reason, _ = job_state(holder.slurm_job, dict(os.environ))
        except OSError:  # no scontrol on this machine: say so rather than guess
            status.slurm = (holder.slurm_job, "UNKNOWN (no scontrol here)")
            return "unknown", f"detached as Slurm job {holder.slurm_job}; run `medtrain status` where squeue works"
        status.slurm = (holder.slurm_job, state)
        if state == "PENDING":
            return "queued", f"Slurm job {holder.slurm_job} is pending ({reason or 'no reason given'})"
        if state in ("RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED"):
            return "running", f"Slurm job {holder.slurm_job} is {state.lower()} (detached)"
    elif holder is not None and is_alive(holder):
        return "running", f"medtrain launch {holder.describe()} holds the run"
    if status.total and status.step >= status.total and (run_dir / "export" / "config.json").is_file():
        return "finished", f"all {status.total} steps done; exported to {run_dir / 'export'}"
    last = status.restarts[-1] if status.restarts else None
    if last and last.get("action") == "gave_up":
        return "failed", f"restart budget spent; last: {last.get('cause', {}).get('text', '?')}"
    if last and last.get("action") == "stopped":
        return "stopped", f"{last.get('cause', {}).get('text', 'stopped')} after step {last.get('reached_step')}"
    if status.slurm:
        return "failed" if status.step < status.total else "finished", f"Slurm job {status.slurm[0]} is " \
            f"{status.slurm[1].lower()}"
    if status.beats and status.step < status.total:
        return "failed", "no launch holds the run and it stopped short of its last step; `medtrain logs " \
            f"{run_dir}` shows how it ended"
    if status.total and status.step >= status.total:
        return "finished", f"all {status.total} steps done"
    return "not started", "nothing trained yet"


def sparkline(values: list[float], width: int = 40) -> str:
    """The loss curve in one line: the last `width` values, each one of eight block heights."""
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARKS[min(int((v - lo) / span * len(SPARKS)), len(SPARKS) - 1)] for v in values)


def _clock(seconds: float | None) -> str:
    return "-" if seconds is None else fmt_seconds(seconds)


def render(s: RunStatus) -> str:
    lines = [f"{s.run_dir}: {s.stage}, {s.state.upper()} — {s.why}"]
    if s.total:
        lines.append(f"  step        {s.step:,} / {s.total:,} ({100 * s.step / s.total:.1f}%), elapsed "
                     f"{_clock(s.elapsed_s)}" + (f", ETA {_clock(s.eta_s)}" if s.state == "running" else ""))
    if s.loss is not None:
        val = f", validation {s.val_loss:.4f}" if s.val_loss is not None else ""
        lines.append(f"  loss        {s.loss:.4f}{val}   {sparkline(s.losses)}")
        rate = f"{s.tokens_per_s:,.0f} tokens/s" if s.tokens_per_s else "-"
        lines.append(f"  speed       {rate}" + (f", MFU {100 * s.mfu:.1f}%" if s.mfu is not None else ""))
    causes = [f"{r.get('cause', {}).get('text', '?')} (step {r.get('reached_step', '?')}, {r.get('action', '?')})"
              for r in s.restarts]
    lines.append(f"  restarts    {len([r for r in s.restarts if r.get('action') in ('restarted', 'requeued')])}"
                 + (": " + "; ".join(causes) if causes else ""))
    lines.append(f"  checkpoint  {f'step {step_of(s.checkpoint)} ({s.checkpoint})' if s.checkpoint else 'none yet'}")
    if s.slurm:
        lines.append(f"  slurm       job {s.slurm[0]}: {s.slurm[1]}")
    for b in s.beats:
        mark = "  STALE" if b.stale else ""
        lines.append(f"  rank {b.rank:<6} {b.host} {b.phase} at step {b.step}, heartbeat {b.age_s:.0f} s ago{mark}")
    return "\n".join(lines)
