"""The real `deepspeed` launcher invocation for a recipe on a hostfile, validated before anything starts.

Argv is built as a list and printed as is on --dry-run; no user string reaches a shell: hostnames are checked
by the hostfile parser, and values written to `.deepspeed_env` (which DeepSpeed pastes into the remote shell
command) must be free of shell metacharacters.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core.errors import UserError
from medtrain.core.publish import publish_text

LAUNCHERS = ("pdsh", "slurm", "openmpi", "local")
FORWARDED_PREFIXES = ("NCCL_", "GLOO_", "HF_", "TRANSFORMERS_", "TORCH_", "OMP_NUM_THREADS", "MEDTRAIN_", "CCL_")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_VALUE = re.compile(r"^[\w@%+=:,./ -]*$")


class LaunchError(UserError):
    """A launch that would fail on the cluster; found before any process starts."""


@dataclass
class LaunchSpec:
    pool: OrderedDict[str, int]
    hostfile: Path
    launcher: str
    entry: list[str]
    """What every rank runs: ['--module', 'medtrain', 'train', ...] or [script.py, args...]."""
    run_dir: Path
    master_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    launcher_args: str = ""

    @property
    def world_size(self) -> int:
        return sum(self.pool.values())

    @property
    def master_addr(self) -> str:
        first = next(iter(self.pool))
        return "127.0.0.1" if first == "localhost" else first

    @property
    def env_file(self) -> Path:
        return self.run_dir / ".deepspeed_env"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_executable() -> list[str]:
    beside = Path(sys.executable).parent / "deepspeed"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "deepspeed.launcher.runner"]


def rank_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What remote ranks need and ssh does not carry: this environment's PATH first, chosen comm variables."""
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}
    for key, value in os.environ.items():
        if key.startswith(FORWARDED_PREFIXES) or key == "PYTHONPATH":
            env[key] = value
    env.update(extra or {})
    for key, value in env.items():
        if not _ENV_KEY.match(key):
            raise LaunchError(f"environment variable name '{key}' is not a valid identifier")
        if not _ENV_VALUE.match(value):
            raise LaunchError(
                f"environment value for {key} contains shell metacharacters ({value!r}); DeepSpeed pastes it "
                "into the remote command, so unset it or simplify it"
            )
    return env


def validate(spec: LaunchSpec, *, dry_run: bool) -> None:
    if spec.launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher {spec.launcher} is not one of {', '.join(LAUNCHERS)}")
    rank_env(spec.env)
    if spec.launcher == "local":
        if len(spec.pool) != 1:
            raise LaunchError(
                f"{spec.hostfile}: --launcher local runs on this machine only, but the hostfile lists "
                f"{len(spec.pool)} hosts; use --launcher pdsh or a one-line hostfile such as hostfiles/localhost"
            )
    if dry_run:
        return
    needed = {"pdsh": "pdsh", "slurm": "sbatch", "openmpi": "mpirun"}.get(spec.launcher)
    if needed and shutil.which(needed) is None:
        raise LaunchError(f"--launcher {spec.launcher} needs '{needed}' on PATH; install it or pick another launcher")


def build_command(spec: LaunchSpec) -> list[str]:
    """Argv of the deepspeed launcher; the same list is run, printed on --dry-run and put in the sbatch script."""
    ds = deepspeed_executable()
    port = str(spec.master_port)
    if spec.launcher == "local":
        return ds + ["--num_gpus", str(spec.world_size), "--master_port", port, *spec.entry]
    cmd = ds + ["--hostfile", str(spec.hostfile.resolve()), "--launcher", spec.launcher,
                "--master_addr", spec.master_addr, "--master_port", port]
    launcher_args = spec.launcher_args
    if spec.launcher == "openmpi":
        # mpirun starts every rank itself: DeepSpeed's ssh probe of the first host is not needed (and fails
        # where only mpirun's own agent may log in), and one host must still go through mpirun
        cmd += ["--no_ssh_check", "--force_multi"]
        if "--allow-run-as-root" not in launcher_args and os.geteuid() == 0:
            launcher_args = f"{launcher_args} --allow-run-as-root".strip()
        if "btl_tcp_if_include" not in launcher_args:  # DeepSpeed's default is eth0, right only by luck
            launcher_args = f"{launcher_args} --mca btl_tcp_if_include {route_interface(spec.master_addr)}".strip()
    if launcher_args:
        cmd.append(f"--launcher_args={launcher_args}")  # one token: argparse reads "--launcher_args --x" as two
    return cmd + list(spec.entry)


def route_interface(addr: str) -> str:
    """The interface this host reaches `addr` through (`ip route get`), for MPI's TCP transport."""

    try:
        out = subprocess.run(["ip", "route", "get", addr], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    m = re.search(r"\bdev (\S+)", out)
    if m and re.fullmatch(r"[\w.-]+", m.group(1)):
        return m.group(1)
    return "lo" if addr.startswith("127.") else "eth0"


def ranks_env(spec: LaunchSpec) -> dict[str, str]:
    """What every rank gets. mpirun and srun start the ranks themselves, without DeepSpeed's launch.py, so the
    rendezvous address travels with them."""
    extra = dict(spec.env)
    if spec.launcher == "openmpi":
        extra.update(MASTER_ADDR=spec.master_addr, MASTER_PORT=str(spec.master_port))
    return rank_env(extra)


def launch_environment(spec: LaunchSpec) -> dict[str, str]:
    """The launcher's own environment: ours plus DS_ENV_FILE pointing at the run's env file."""
    env = dict(os.environ)
    env.update(ranks_env(spec))
    env["DS_ENV_FILE"] = str(spec.env_file.resolve())
    env.setdefault("PDSH_RCMD_TYPE", "ssh")
    return env


def write_env_file(spec: LaunchSpec) -> None:
    lines = "".join(f"{k}={v}\n" for k, v in ranks_env(spec).items())
    publish_text(spec.env_file, lines)


def render_nodes(spec: LaunchSpec, cmd: list[str]) -> str:
    """What --dry-run prints: every node with its ranks, the env ranks get, and the exact argv."""
    lines = [f"launcher {spec.launcher}: {len(spec.pool)} nodes, {spec.world_size} ranks, "
             f"master {spec.master_addr}:{spec.master_port}"]
    rank = 0
    for node_rank, (host, slots) in enumerate(spec.pool.items()):
        role = "  (master)" if node_rank == 0 else ""
        lines.append(f"  node {node_rank:>3}  {host:<24} slots={slots}  ranks {rank}-{rank + slots - 1}{role}")
        rank += slots
    lines.append(f"env for ranks ({spec.env_file}):")
    lines += [f"  {k}={v}" for k, v in ranks_env(spec).items()]
    lines.append("command:")
    lines.append("  " + shlex.join(cmd))
    return "\n".join(lines)
