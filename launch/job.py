"""A started launcher and the ranks it spread over the nodes: signal them, and end all of them.

Killing the local `deepspeed`/pdsh client is not enough on a cluster: pdsh leaves the remote ranks running, each
in the process group of its ssh session. Every rank records its host position, pid and process group in its
heartbeat, so the job can be ended where it runs: `kill -KILL -- -PGID` over ssh on each node (hostnames come
from the validated hostfile, pids and groups are integers), then the local launcher's own group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.heartbeat import Beat


def rank_hosts(pool: OrderedDict[str, int]) -> list[str]:
    """Rank -> hostfile host, in DeepSpeed's order (hosts in file order, ranks packed per host)."""
    return [host for host, slots in pool.items() for _ in range(slots)]


class Job:
    def __init__(self, command: list[str], env: dict[str, str], pool: OrderedDict[str, int], launcher: str):
        self.pool, self.launcher = pool, launcher
        self.hosts = rank_hosts(pool)
        # its own session: Ctrl-C reaches us, not the ranks, and the whole local tree dies with one killpg
        self.proc = subprocess.Popen(command, env=env, start_new_session=True)
        self.env = env

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def remote(self) -> bool:
        return self.launcher != "local"

    def host_of(self, rank: int) -> str:
        return self.hosts[rank] if rank < len(self.hosts) else "?"

    def on_host(self, rank: int, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess | None:
        """Run a fixed command (integers and fixed words only) where `rank` runs."""
        cmd = ["ssh", self.host_of(rank), *argv] if self.remote else argv
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        except (OSError, subprocess.TimeoutExpired):
            return None

    def process_state(self, beat: Beat) -> str:
        """R running, S sleeping (a collective's wait, usually), T stopped, D disk, Z dead, '-' gone."""
        if not self.remote:
            try:
                return Path(f"/proc/{beat.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return "-"
        done = self.on_host(beat.rank, ["cat", f"/proc/{int(beat.pid)}/stat"])
        if done is None or done.returncode != 0 or ")" not in done.stdout:
            return "-"
        return done.stdout.rsplit(")", 1)[1].split()[0]

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
                self.on_host(rank, ["kill", "-KILL", "--", f"-{int(pgid)}"])

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


def _killpg(pgid: int) -> None:
    if pgid <= 1 or pgid == os.getpgid(0):
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
