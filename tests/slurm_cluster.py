"""A throwaway Slurm cluster on this machine: munged, slurmctld and two slurmd "nodes" (n1, n2) on loopback.

Debian's Slurm 22.05 runs two slurmd on one host when each has its own port, spool and pid file. Every daemon
runs in the foreground under our Popen and is stopped by its PID; all ports are free ones, so a cluster the
machine already runs is left alone. Settings found to work in this container: linuxproc process tracking, no
task plugin, cons_tres with CR_Core, no accounting.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster import need

NODES = ("n1", "n2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(), timeout=30)

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def start_slurm_cluster(root: Path) -> SlurmCluster:
    for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            need(f"{tool} (slurm-wlm, munge)", "apt-get install -y slurm-wlm munge (make test does it as root)")
    if os.geteuid() != 0:
        need("root", "slurmd runs jobs as their user and needs root here")
    root.mkdir(parents=True, exist_ok=True)
    for d in ("state", "spool", "munge"):
        (root / d).mkdir(exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = root / "munge" / "sock"
    host = socket.gethostname()
    ctld, slurmd_port, n_ports = _free_port(), _free_port(), [_free_port() for _ in NODES]
    conf = root / "slurm.conf"
    # cred_expire: also how long a requeued job waits before it may start again (Slurm's default 120 s)
    conf.write_text("\n".join([
        "ClusterName=medtrain-test", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={ctld}",
        f"SlurmdPort={slurmd_port}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"AuthInfo=socket={sock},cred_expire=15", "CredType=cred/munge", f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}/%n", f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd-%n.pid", f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd-%n.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "MpiDefault=none", "ReturnToService=2",
        "SchedulerType=sched/builtin", "MinJobAge=600",
        *[f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs=2 RealMemory=4000 State=UNKNOWN"
          for n, p in zip(NODES, n_ports, strict=True)],
        f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=small Nodes={','.join(NODES)} MaxNodes=1 MaxTime=INFINITE State=UP", "",
    ]))
    cluster = SlurmCluster(root, conf)
    log = open(root / "daemons.log", "w")  # noqa: SIM115 (kept open while the daemons run)
    munged = shutil.which("munged") or "/usr/sbin/munged"
    cluster.processes.append(subprocess.Popen(
        [munged, "-F", f"--key-file={key}", f"--socket={sock}", f"--pid-file={root}/munge/pid",
         f"--log-file={root}/munge/log", f"--seed-file={root}/munge/seed", "--force"], stdout=log, stderr=log))
    deadline = time.time() + 10
    while not sock.exists() and time.time() < deadline:
        time.sleep(0.05)
    env = cluster.env()
    slurmctld = shutil.which("slurmctld") or "/usr/sbin/slurmctld"
    slurmd = shutil.which("slurmd") or "/usr/sbin/slurmd"
    cluster.processes.append(subprocess.Popen([slurmctld, "-D", "-i", "-f", str(conf)], stdout=log, stderr=log,
                                              env=env))
    for n in NODES:
        cluster.processes.append(subprocess.Popen([slurmd, "-D", "-f", str(conf), "-N", n], stdout=log,
                                                  stderr=log, env=env))
    deadline = time.time() + 30
    while time.time() < deadline:
        out = cluster.run("sinfo", "-h", "-p", "debug", "-o", "%T %D").stdout.split()
        if out[:2] == ["idle", "2"]:
            return cluster
        time.sleep(0.2)
    cluster.stop()
    raise RuntimeError(f"slurm did not come up: {(root / 'daemons.log').read_text()[-2000:]}\n"
                       f"{(root / 'slurmctld.log').read_text()[-2000:] if (root / 'slurmctld.log').exists() else ''}")
