"""Each rank's sign of life, and a way to ask it where it is.

A rank writes `HEARTBEAT_DIR/rank<R>.json` (step, phase, time, host, pid, process group) at every phase change
and every optimizer step: one small atomic rename, microseconds next to a step. The launching side reads these
files over the run's shared filesystem to tell a slow run from a hung one (launch/watchdog.py), and to find every
rank's process group on every node when the job must end.

`faulthandler` is registered on SIGUSR1: the watchdog sends it and the rank's Python stacks, all threads, land in
`HEARTBEAT_DIR/stacks-rank<R>.txt` even while the rank sits inside a C++ collective that never returns.
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import platform
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DIR_ENV = "MEDTRAIN_HEARTBEAT_DIR"
ATTEMPT_ENV = "MEDTRAIN_ATTEMPT"
STACK_SIGNAL = signal.SIGUSR1
PHASES = ("start", "setup", "step", "save", "export", "exited")


@dataclass
class Beat:
    rank: int
    host: str
    pid: int
    pgid: int
    attempt: int
    phase: str
    step: int
    time: float
    code: int | None = None

    @classmethod
    def read(cls, path: Path) -> Beat | None:
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # being replaced, or not ours


class Heartbeat:
    """Off (every method a no-op) unless the launcher set MEDTRAIN_HEARTBEAT_DIR: a rank started by hand has no
    watchdog to talk to."""

    def __init__(self, directory: str | None = None):
        directory = directory or os.environ.get(DIR_ENV)
        self.dir = Path(directory) if directory else None
        self.rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", os.environ.get(
            "OMPI_COMM_WORLD_RANK", "0"))))
        self.attempt = int(os.environ.get(ATTEMPT_ENV, "0"))
        self.step, self.phase = 0, "start"
        self._stacks = None
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stacks = open(self.dir / f"stacks-rank{self.rank}.txt", "w")  # noqa: SIM115 (lives as long as we do)
        faulthandler.register(STACK_SIGNAL, file=self._stacks, all_threads=True)
        self.beat("start")

    def beat(self, phase: str | None = None, step: int | None = None, code: int | None = None) -> None:
        if self.dir is None:
            return
        self.phase = phase or self.phase
        self.step = self.step if step is None else step
        beat = Beat(self.rank, socket.gethostname(), os.getpid(), os.getpgid(0), self.attempt, self.phase,
                    self.step, time.time(), code)
        path = self.dir / f"rank{self.rank}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(beat)), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # a full disk must not turn a heartbeat into the failure; the watchdog sees the silence


_TGKILL = {"x86_64": 234, "aarch64": 131, "ppc64le": 250, "riscv64": 131}


def ask_for_stacks(pid: int) -> None:
    """Send the stack signal to the rank's main thread (tgkill; its thread id is its pid), not to the process:
    the kernel would hand a process-wide signal to any thread, and a dump taken from a helper thread while the
    main one runs on comes out torn. A stopped rank takes it, consistently, the moment it is continued."""

    number = _TGKILL.get(platform.machine())
    if number is not None and ctypes.CDLL(None, use_errno=True).syscall(number, pid, pid, int(STACK_SIGNAL)) == 0:
        return
    os.kill(pid, STACK_SIGNAL)


_current: Heartbeat | None = None


def heartbeat() -> Heartbeat:
    """This process's heartbeat (created on first use)."""
    global _current
    if _current is None:
        _current = Heartbeat()
    return _current


def read_beats(directory: Path, attempt: int | None = None) -> dict[int, Beat]:
    beats = {}
    for path in Path(directory).glob("rank*.json"):
        beat = Beat.read(path)
        if beat is not None and (attempt is None or beat.attempt == attempt):
            beats[beat.rank] = beat
    return beats
