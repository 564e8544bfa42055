"""Two "nodes" on loopback addresses, reached over a private sshd with pdsh, as a real cluster is.

The sshd runs on a free high port with its own config and a throwaway key; `ssh` is wrapped so that pdsh and
DeepSpeed's own reachability check both use that config. It is stopped by its own PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

NODES = ("127.0.0.2", "127.0.0.3")
SPARE = "127.0.0.4"
"""Reachable over ssh like the nodes, but not in the hostfile: a spare host for `--spare-hosts`."""


def need(what: str, why: str) -> None:
    """Missing system pieces fail under CI (CI installs them) and skip elsewhere, with the reason shown."""
    message = f"{what} is missing: {why}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class LoopbackCluster:
    root: Path
    hostfile: Path
    bin_dir: Path
    port: int
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env['PATH']}"
        return env

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_loopback_cluster(root: Path) -> LoopbackCluster:
    sshd, ssh, keygen = "/usr/sbin/sshd", shutil.which("ssh"), shutil.which("ssh-keygen")
    if not Path(sshd).exists() or not ssh or not keygen:
        need("openssh-server/openssh-client", "apt-get install -y openssh-server (make test does it as root)")
    if not shutil.which("pdsh"):
        need("pdsh", "apt-get install -y pdsh (make test does it as root)")
    if os.geteuid() != 0:
        need("root", "the loopback sshd logs in as the current user and needs root for its privilege separation")
    root.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "user_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}", *[f"ListenAddress {n}" for n in (*NODES, SPARE)],
        f"HostKey {root / 'host_key'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"PidFile {root / 'sshd.pid'}", "PermitRootLogin yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PrintMotd no", "LogLevel ERROR", "",
    ]))
    (root / "ssh_config").write_text("\n".join([
        "Host *", f"  Port {port}", f"  IdentityFile {root / 'user_key'}", "  IdentitiesOnly yes",
        "  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  LogLevel ERROR", "  BatchMode yes", "",
    ]))
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {ssh} -F {root / "ssh_config"} "$@"\n')
    wrapper.chmod(0o755)
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(root / "sshd_config")],
                               stderr=open(root / "sshd.log", "w"))
    hostfile = root / "hostfile"
    hostfile.write_text("".join(f"{n} slots=1\n" for n in NODES))
    cluster = LoopbackCluster(root, hostfile, bin_dir, port, process)
    deadline = time.time() + 15
    while time.time() < deadline:
        ok = subprocess.run([str(wrapper), NODES[1], "true"], capture_output=True, timeout=10).returncode == 0
        if ok:
            return cluster
        if process.poll() is not None:
            break
        time.sleep(0.3)
    cluster.stop()
    raise RuntimeError(f"loopback sshd did not come up: {(root / 'sshd.log').read_text()}")
