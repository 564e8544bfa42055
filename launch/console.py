"""What the user of `medtrain launch` sees, kept: RUN_DIR/logs/launch.log holds the console as it was printed
(the launcher's lines and every rank's output that reached it), so a run's story outlives the terminal and
`medtrain logs` can show it. When medtrain ends a job itself, the console is muted: the ranks it ends would
print a traceback each ("Connection reset by peer", thousands at 120 ranks), the consequence and not the cause;
they still reach the log."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import IO

from medtrain.core.errors import UserError

LOG_DIR = "logs"


def logs_dir(run_dir: Path) -> Path:
    return Path(run_dir) / LOG_DIR


def run_log(run_dir: Path, rank: int | None = None) -> Path:
    """The run's console log, or rank `rank`'s own; a missing one is a UserError naming the logs there are."""

    path = logs_dir(run_dir) / ("launch.log" if rank is None else f"rank{rank}.log")
    if not path.is_file():
        have = sorted(p.name for p in logs_dir(run_dir).glob("*.log")) if logs_dir(run_dir).is_dir() else []
        found = ", ".join(have) or "no logs (not a run started by medtrain launch)"
        raise UserError(f"{path}: no such log; {run_dir} has {found}")
    return path


def copy_log(path: Path, out: IO[bytes], follow: bool = False) -> None:
    """Copy a log to `out` as it is; with `follow`, keep copying what is appended (as `tail -f`) until stopped."""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
            elif not follow:
                return
            else:
                time.sleep(0.5)


class Console:
    def __init__(self, run_dir: Path):
        self.path = logs_dir(run_dir) / "launch.log"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 (open for the run)
        self._lock = threading.Lock()
        self.muted = False

    def write(self, data: bytes, console: bool = True) -> None:
        with self._lock:
            if console and not self.muted:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            if self._log is not None:
                try:
                    self._log.write(data)
                    self._log.flush()
                except OSError:
                    self._log = None  # a full disk loses the log, not the run

    def say(self, text: str) -> None:
        self.write((text + "\n").encode("utf-8", "replace"))

    def mute(self) -> None:
        self.muted = True

    def unmute(self) -> None:
        self.muted = False

    def pump(self, stream: IO[bytes]) -> threading.Thread:
        """Copy a child's output to the console and the log as it comes (chunks, so progress bars stay live)."""
        def run() -> None:
            fd = stream.fileno()
            while chunk := os.read(fd, 65536):
                self.write(chunk)
            stream.close()

        thread = threading.Thread(target=run, name="medtrain-console", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
