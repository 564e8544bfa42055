"""What the user of `medtrain launch` sees, kept: RUN_DIR/logs/launch.log holds the console as it was printed
(the launcher's lines and every rank's output that reached it), so a run's story outlives the terminal and
`medtrain logs` can show it. When medtrain ends a job itself, the console is muted: the ranks it ends would
print a traceback each ("Connection reset by peer", thousands at 120 ranks), the consequence and not the cause;
they still reach the log."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import IO

LOG_DIR = "logs"


def logs_dir(run_dir: Path) -> Path:
    return Path(run_dir) / LOG_DIR


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
