"""What the user of `medtrain launch` sees, kept: RUN_DIR/logs/launch.log holds the console as it was printed
(the launcher's lines and every rank's output that reached it), so a run's story outlives the terminal and
`medtrain logs` can show it. When medtrain ends a job itself, the console is muted: the ranks it ends would
print a traceback each ("Connection reset by peer", thousands at 120 ranks), the consequence and not the cause;
they still reach the log."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from medtrain.core.errors import UserError
from medtrain.core.log import ROOT

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


# DeepSpeed's own log lines ("[2026-12-07 21:53:51,632] [INFO] [launch.py:152:main] ..."), as the launcher and
# the ranks print them (under pdsh with "host: " before), and its op builds' notes: kept in launch.log and the rank
# logs, not shown on the console, where they were a quarter of a launch's lines (an ERROR still shows)
DEEPSPEED_NOISE = re.compile(rb"^(?:[\w.-]+: )?(?:\[\d{4}-\d\d-\d\d [\d:,]+\] \[(?:INFO|WARNING|DEBUG)\] \[|"
                             rb"DeepSpeed [\w.]+ built successfully)")


@contextmanager
def recorded() -> Iterator[list[str]]:
    """The lines medtrain logs inside the block (a launch's warnings before its run directory exists), to put
    at the head of launch.log once it does."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(logging.INFO)
    logging.getLogger(ROOT).addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger(ROOT).removeHandler(handler)


def write_preamble(run_dir: Path, lines: list[str]) -> None:
    """What `medtrain launch` printed before the job started (warnings, the plan, the commands), so launch.log
    starts with everything the user saw."""
    path = logs_dir(run_dir) / "launch.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


class Console:
    def __init__(self, run_dir: Path):
        self.path = logs_dir(run_dir) / "launch.log"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 (open for the run)
        self._lock = threading.Lock()
        self.muted = False
        self._pending = b""

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
        """Copy a child's output to the console and the log as it comes (chunks, so progress bars stay live);
        DeepSpeed's log lines go to the log only."""
        def run() -> None:
            fd = stream.fileno()
            while chunk := os.read(fd, 65536):
                self.feed(chunk)
            self.flush_pending()
            stream.close()

        thread = threading.Thread(target=run, name="medtrain-console", daemon=True)
        thread.start()
        return thread

    def feed(self, chunk: bytes, console: bool = True) -> None:
        """A job's output: whole lines are judged (DeepSpeed's to the log only); a partial line is held only while
        it could still be DeepSpeed's (it starts as one does), so a progress bar's updates pass at once."""
        data, self._pending = self._pending + chunk, b""
        lines = data.split(b"\n")
        tail = lines.pop()
        for line in lines:
            self.write(line + b"\n", console=console and not DEEPSPEED_NOISE.match(line))
        if tail:
            if tail.startswith(b"[") or tail.startswith(b"DeepSpeed") or b": [" in tail[:80]:
                self._pending = tail
            else:
                self.write(tail, console=console)

    def flush_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, b""
            self.write(pending, console=not DEEPSPEED_NOISE.match(pending))

    def close(self) -> None:
        self.flush_pending()
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
