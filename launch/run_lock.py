"""One run per output directory: `medtrain launch` holds RUN_DIR/.medtrain.lock while its job lives.

The lock names its holder (host, pid, start time, command; under `--detach` the Slurm job id) so a refused user
knows whom to ask. It is made with O_CREAT|O_EXCL, which NFS v3+ and Lustre honour, so two launches from two
nodes of a cluster into one shared directory cannot both win. A holder that died without releasing it is found
stale and taken over with a line saying so: on the same host by its pid; on another host by the lock's mtime,
which a live holder refreshes every REFRESH_SECONDS; a detached Slurm job by `squeue`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from medtrain.core.errors import UserError
from medtrain.core.log import get_logger

LOCK_NAME = ".medtrain.lock"
REFRESH_SECONDS = 15.0
STALE_SECONDS = 120.0

log = get_logger(__name__)


class RunLockedError(UserError):
    """Another launch is alive in this output directory."""


@dataclass
class Holder:
    host: str
    pid: int
    started: str
    command: str
    token: str
    slurm_job: str | None = None
    age_s: float = 0.0
    """Seconds since the holder last refreshed the lock."""

    def describe(self) -> str:
        who = f"Slurm job {self.slurm_job}" if self.slurm_job else f"pid {self.pid}"
        return f"{self.host} ({who}, since {self.started}): {self.command}"


def read_holder(lock: Path) -> Holder | None:
    try:
        raw = json.loads(lock.read_text(encoding="utf-8"))
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # a lock being written, or a damaged one: judged by its age alone
        age = time.time() - lock.stat().st_mtime if lock.exists() else STALE_SECONDS + 1
        return Holder("?", -1, "?", "(unreadable lock file)", "", age_s=age)
    return Holder(str(raw.get("host", "?")), int(raw.get("pid", -1)), str(raw.get("started", "?")),
                  str(raw.get("command", "?")), str(raw.get("token", "")), raw.get("slurm_job"), age)


def is_alive(holder: Holder) -> bool:
    """Whether the holder still runs: its pid on this host, its Slurm job in the queue, else a fresh mtime."""
    if holder.slurm_job:
        if shutil.which("squeue"):
            r = subprocess.run(["squeue", "-h", "-j", holder.slurm_job, "-o", "%T"], capture_output=True, text=True,
                               timeout=30)
            return r.returncode == 0 and bool(r.stdout.strip())
        return holder.age_s < STALE_SECONDS
    if holder.host == socket.gethostname() and holder.pid > 0:
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's live process
        return True
    return holder.age_s < STALE_SECONDS


def refuse_if_held(run_dir: Path) -> None:
    """The check a dry run and `--check` make: a live launch here is an error before anything else is done."""
    holder = read_holder(Path(run_dir) / LOCK_NAME)
    if holder is not None and holder.token != os.environ.get(_TOKEN_ENV) and is_alive(holder):
        raise RunLockedError(_held_line(run_dir, holder))


def _held_line(run_dir: Path, holder: Holder) -> str:
    return (f"{run_dir} is in use by a live medtrain launch on {holder.describe()}; wait for it to end, or set "
            "output_dir to another directory")


_TOKEN_ENV = "MEDTRAIN_RUN_LOCK"


class RunLock:
    """Held from before the run's files are written until the job has ended on every node."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = self._record()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            self._take_over(record)
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(record)
        os.environ[_TOKEN_ENV] = self.token  # this process's own later checks (a sweep's cells) see it as ours
        self._thread = threading.Thread(target=self._refresh, name="medtrain-run-lock", daemon=True)
        self._thread.start()
        return self

    def _take_over(self, record: str) -> None:
        holder = read_holder(self.path)
        if holder is not None and is_alive(holder):
            raise RunLockedError(_held_line(self.run_dir, holder))
        if holder is not None:
            log.warning(f"medtrain: taking over the lock of {self.run_dir} from {holder.describe()}: that launch "
                        "is gone (" + ("its job left the queue" if holder.slurm_job else
                                       "its process no longer exists" if holder.host == socket.gethostname() else
                                       f"not refreshed for {holder.age_s:.0f} s") + ")")
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(record, encoding="utf-8")
        os.replace(tmp, self.path)
        time.sleep(0.05)  # two launches taking over at once: the last rename wins, the other sees it and stops
        now = read_holder(self.path)
        if now is None or now.token != self.token:
            raise RunLockedError(_held_line(self.run_dir, now) if now else f"{self.run_dir}: lost the lock race")

    def _record(self, **extra) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "command": " ".join(["medtrain", *sys.argv[1:]]), "token": self.token, **extra},
                          ensure_ascii=False) + "\n"

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                pass  # the disk may be what failed: the supervisor reports that, not the lock

    def hand_to_slurm(self, job_id: str) -> None:
        """`--detach`: the batch job outlives this process, so the lock names the job and stays."""
        self._stop.set()
        self.path.write_text(self._record(slurm_job=str(job_id)), encoding="utf-8")
        os.environ.pop(_TOKEN_ENV, None)

    def release(self) -> None:
        self._stop.set()
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.token and holder.slurm_job is None:
            self.path.unlink(missing_ok=True)
        if os.environ.get(_TOKEN_ENV) == self.token:
            os.environ.pop(_TOKEN_ENV, None)
