"""A started launcher and the ranks it spread over the nodes: signal them, and end all of them.

Killing the local `deepspeed`/pdsh client is not enough on a cluster: pdsh leaves the remote ranks running, each
in the process group of its ssh session. Every rank records its host position, pid and process group in its
heartbeat, so the job can be ended where it runs: `kill -KILL -PGID` over ssh on each node (hostnames come
from the validated hostfile, pids and groups are integers), then the local launcher's own group.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from medtrain.core.heartbeat import Beat, ask_for_stacks
from medtrain.core.rank import SHM_PREFIX


def rank_hosts(pool: OrderedDict[str, int]) -> list[str]:
    """Rank -> hostfile host, in DeepSpeed's order (hosts in file order, ranks packed per host)."""
    return [host for host, slots in pool.items() for _ in range(slots)]


def local_process_state(pid: int) -> str:
    """The state letter of a process on this host (/proc/PID/stat): R, S, T, D, Z, or '-' when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "-"


class JobHandle(Protocol):
    """What the supervisor needs of a started attempt, wherever it runs: a launcher process here (Job) or a
    Slurm batch job (launch.slurm.SlurmJob)."""

    console: object | None
    """The supervisor's console (launch/console.py): the job's output goes through it."""
    job_id: str | None
    """The scheduler's id; None for a job this process started itself."""
    state: str
    """The scheduler's last word on the job (TIMEOUT, PREEMPTED, ...); "" when there is none."""

    @property
    def remote(self) -> bool: ...
    def poll(self) -> int | None: ...
    def host_of(self, rank: int) -> str: ...
    def process_state(self, beat: Beat) -> str: ...
    def ask_for_stacks(self, beats: list[Beat]) -> None: ...
    def signal_ranks(self, beats: list[Beat], sig: signal.Signals) -> None: ...
    def end(self, beats: list[Beat]) -> None: ...
    def release_shm(self) -> None: ...


class Job(JobHandle):
    """The launcher (deepspeed, pdsh, mpirun) started as a process of ours."""

    job_id = None
    state = ""

    def __init__(self, command: list[str], env: dict[str, str], pool: OrderedDict[str, int], launcher: str,
                 port: int = 0, console=None):
        self.pool, self.launcher, self.port = pool, launcher, port
        self.hosts = rank_hosts(pool)
        # its own session: Ctrl-C reaches us, not the ranks, and the whole local tree dies with one killpg;
        # its output through the console (launch/console.py), which keeps it in the run's log
        out = subprocess.PIPE if console is not None else None
        self.proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=out,
                                     stderr=subprocess.STDOUT if console is not None else None)
        self._pump = console.pump(self.proc.stdout) if console is not None else None
        self.console = console
        self.env = env

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self._pump is not None:
            self._pump.join(timeout=5)  # the last lines reach the console before the verdict
        return code

    @property
    def remote(self) -> bool:
        return self.launcher != "local"

    def host_of(self, rank: int) -> str:
        return self.hosts[rank] if rank < len(self.hosts) else "?"

    def on_host(self, rank: int, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess | None:
        """Run a command where `rank` runs (over ssh, quoted: the remote shell sees the same argv)."""
        cmd = ["ssh", self.host_of(rank), shlex.join(argv)] if self.remote else argv
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        except (OSError, subprocess.TimeoutExpired):
            return None

    def process_state(self, beat: Beat) -> str:
        """R running, S sleeping (a collective's wait, usually), T stopped, D disk, Z dead, '-' gone."""
        if not self.remote:
            return local_process_state(beat.pid)
        done = self.on_host(beat.rank, ["cat", f"/proc/{int(beat.pid)}/stat"])
        if done is None or done.returncode != 0 or ")" not in done.stdout:
            return "-"
        return done.stdout.rsplit(")", 1)[1].split()[0]

    def ask_for_stacks(self, beats: list[Beat]) -> None:
        """core.heartbeat.ask_for_stacks where each rank runs, then SIGCONT so a stopped rank answers too."""
        def ask(beat: Beat) -> None:
            if self.remote:
                self.on_host(beat.rank, [sys.executable, "-c", f"from medtrain.core.heartbeat import ask_for_stacks; "
                                                               f"ask_for_stacks({int(beat.pid)})"])
            else:
                try:
                    ask_for_stacks(beat.pid)
                except OSError:
                    pass

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(ask, beats))
        self.signal_ranks(beats, signal.SIGCONT)

    def signal_ranks(self, beats: list[Beat], sig: signal.Signals) -> None:
        def send(beat: Beat) -> None:
            if self.remote:
                self.on_host(beat.rank, ["kill", f"-{sig.name.removeprefix('SIG')}", str(int(beat.pid))])
            else:
                try:
                    os.kill(beat.pid, sig)
                except OSError:
                    pass

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(send, beats))

    def end(self, beats: list[Beat]) -> None:
        """SIGKILL every rank's process group on its node, then the local launcher's; wait for the launcher."""
        own = os.getpgid(0)
        if self.remote:
            groups = {(b.rank, b.pgid) for b in beats if b.pgid > 1}
            by_host: dict[tuple[str, int], int] = {(self.host_of(r), g): r for r, g in groups}

            def kill(item: tuple[tuple[str, int], int]) -> None:
                (_, pgid), rank = item
                self.on_host(rank, ["sh", "-c", f"kill -KILL -{int(pgid)}; rm -f /dev/shm/{SHM_PREFIX}_*_"
                                                f"{int(self.port)}_*"])

            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(kill, by_host.items()))
        else:
            for b in beats:  # a rank that left the launcher's group still dies
                if b.pgid not in (own, self.proc.pid) and b.pgid > 1:
                    _killpg(b.pgid)
        _killpg(self.proc.pid)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.2)
        self.release_shm()

    def release_shm(self) -> None:
        """The shm buffers of killed local ranks (a rank that exits releases its own: core.rank)."""
        if self.port:
            for f in Path("/dev/shm").glob(f"{SHM_PREFIX}_{os.getuid()}_*_{int(self.port)}_*"):
                f.unlink(missing_ok=True)


def _killpg(pgid: int) -> None:
    if pgid <= 1 or pgid == os.getpgid(0):
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
