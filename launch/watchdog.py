"""Tell a hung run from a slow one by the ranks' heartbeats, and record where each rank was when it hung.

A stopped rank, a deadlock or a stuck collective looks the same from outside: no rank makes progress, and the
others wait inside an all-reduce until the distributed timeout (30 minutes by default, longer on NCCL). Here a
rank whose heartbeat is older than its phase's allowance (setup, step, save) marks the run hung; before the job
is ended every rank is asked for its Python stacks, which are written to RUN_DIR/hangs/<time>/rank<R>.txt.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core.heartbeat import Beat, read_beats
from medtrain.core.recipe import Recipe
from medtrain.launch.job import Job

STATES = {"R": "running", "S": "waiting", "D": "in disk I/O", "T": "stopped (SIGSTOP?)", "t": "stopped by a "
          "debugger", "Z": "dead", "-": "gone",
          "?": "state unknown"}


@dataclass
class Allowances:
    step: float
    setup: float
    save: float

    @classmethod
    def of(cls, recipe: Recipe) -> Allowances:
        return cls(recipe.hang_timeout, max(recipe.setup_timeout, recipe.hang_timeout),
                   max(recipe.save_timeout, recipe.hang_timeout))

    def of_phase(self, phase: str) -> float:
        return {"start": self.setup, "setup": self.setup, "save": self.save, "export": self.save}.get(phase, self.step)

    @property
    def dist_timeout_minutes(self) -> float:
        """A collective waits a minute longer than the longest allowance, so the watchdog always speaks first."""
        if self.step <= 0:
            return 30.0
        return (max(self.step, self.setup, self.save) + 60) / 60


@dataclass
class Hang:
    stalled: list[int]
    """Ranks past their allowance, the likely culprit first (a stopped process, then the oldest heartbeat)."""
    beats: dict[int, Beat]
    missing: list[int]
    detected: float
    states: dict[int, str] = field(default_factory=dict)
    stacks_dir: str = ""

    @property
    def last_progress(self) -> float:
        return max((b.time for b in self.beats.values()), default=self.detected)

    def where(self, rank: int) -> str:
        if rank in self.missing:
            return f"rank {rank}: never started (no heartbeat)"
        b = self.beats[rank]
        state = STATES.get(self.states.get(rank, "?"), self.states.get(rank, "?"))
        doing = {"step": f"in step {b.step + 1}", "save": f"saving step {b.step}", "export": "exporting",
                 "start": "starting", "setup": "in setup"}.get(b.phase, b.phase)
        return f"rank {rank} ({b.host} pid {b.pid}): {doing}, {state}, silent {self.detected - b.time:.0f} s"

    def summary(self) -> str:
        return "; ".join(self.where(r) for r in self.stalled[:4]) + (" ..." if len(self.stalled) > 4 else "")


class Watchdog:
    def __init__(self, directory: Path, attempt: int, world: int, allow: Allowances, started: float):
        self.dir, self.attempt, self.world, self.allow, self.started = directory, attempt, world, allow, started

    def beats(self) -> dict[int, Beat]:
        return read_beats(self.dir, self.attempt)

    def check(self, now: float | None = None, beats: dict[int, Beat] | None = None) -> Hang | None:
        """`beats`: this poll's heartbeats when the caller has read them already."""
        if self.allow.step <= 0:  # hang_timeout: 0 turns the watchdog off
            return None
        now = time.time() if now is None else now
        beats = self.beats() if beats is None else beats
        stalled = [r for r, b in beats.items()
                   if b.phase != "exited" and now - b.time > self.allow.of_phase(b.phase)]
        missing = [r for r in range(self.world) if r not in beats]
        if now - self.started <= self.allow.setup:
            missing = []
        if not stalled and not missing:
            return None
        return Hang(sorted(stalled, key=lambda r: beats[r].time) + missing, beats, missing, now)


def collect_stacks(job: Job, hang: Hang, run_dir: Path, heartbeat_dir: Path, wait: float = 5.0) -> Path:
    """Ask every live rank for its stacks (SIGUSR1 to its main thread, then SIGCONT so a stopped one answers
    too) and write them,
    with what the heartbeat says, to RUN_DIR/hangs/<time>/rank<R>.txt."""
    beats = [b for b in hang.beats.values() if b.phase != "exited"]
    hang.states = {b.rank: job.process_state(b) for b in beats}
    hang.stalled.sort(key=lambda r: (hang.states.get(r) not in ("T", "t"), r in hang.missing,
                                     hang.beats[r].time if r in hang.beats else 0))
    files = {b.rank: heartbeat_dir / f"stacks-rank{b.rank}.txt" for b in beats}
    before = {r: _size(f) for r, f in files.items()}
    job.ask_for_stacks(beats)
    deadline, last = time.time() + wait, None
    while time.time() < deadline:
        sizes = {r: _size(f) for r, f in files.items()}
        if all(sizes[r] > before[r] for r in files) and sizes == last:
            break
        last = sizes
        time.sleep(0.25)
    out = run_dir / "hangs" / time.strftime("%Y%m%d-%H%M%S", time.localtime(hang.detected))
    out.mkdir(parents=True, exist_ok=True)
    for rank in sorted(set(files) | set(hang.missing)):
        text = ""
        if rank in files and files[rank].is_file():
            with open(files[rank], "rb") as f:
                f.seek(before[rank])
                text = f.read().decode("utf-8", "replace")
        head = hang.where(rank) + ("  <- stalled" if rank in hang.stalled[:1] else "")
        (out / f"rank{rank}.txt").write_text(f"# {head}\n\n{text or '(no stacks: the rank did not answer)'}\n")
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def clear(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
