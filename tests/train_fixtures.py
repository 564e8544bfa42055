"""Shared, session-scoped training runs: each DeepSpeed launch costs ~10 s, so tests share them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data_prep" / "samples"
CONT_RECIPE = "recipes/tiny/continual.yaml"
SFT_RECIPE = "recipes/tiny/sft.yaml"


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "medtrain", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)
    return proc


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@contextmanager
def said(name: str = "medtrain"):
    """The messages medtrain logged (core/log.py) while inside, as a list that fills as they come."""
    import logging

    got: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: got.append(record.getMessage())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield got
    finally:
        logger.removeHandler(handler)


def make_tiny_data(root: Path) -> dict[str, Path]:
    from medtrain.core.templates import ALPACA_HEADER
    from medtrain.data_prep.pipeline import prep
    from medtrain.data_prep.tokenizer import train_bpe_tokenizer

    texts = (SAMPLES / "huatuo_sample.jsonl").read_text().splitlines()
    texts += (SAMPLES / "cmexam_train.csv").read_text().splitlines() + [ALPACA_HEADER] * 20
    tok = train_bpe_tokenizer(texts, root / "tok", vocab_size=800)
    prep("huatuo", [SAMPLES / "huatuo_sample.jsonl"], tok, root / "huatuo", seq_len=64, workers=1)
    prep("cmexam", [SAMPLES / "cmexam_train.csv"], tok, root / "cmexam", mode="with_reasoning", seq_len=512, workers=1)
    return {"tok": tok, "huatuo": root / "huatuo", "cmexam": root / "cmexam"}


def launch_args(recipe: str, data: dict, out: Path, *extra: str, hosts: str = "hostfiles/localhost",
                launcher: str = "local") -> list[str]:
    return ["launch", "--hosts", hosts, "--launcher", launcher, "--recipe", recipe,
            "--set", f"tokenizer={data['tok']}", "--set", f"output_dir={out}", *extra]


CONTINUAL = ("--set", "seq_len=64", "--set", "max_steps=12", "--set", "checkpoint_every=4",
             "--set", "keep_checkpoints=2", "--set", "lr=3e-3", "--set", "peak_tflops=0.5")


def run_and_kill_after(args: list[str], marker: Path, timeout: float = 300, env: dict | None = None) -> int:
    """Start `medtrain launch` in its own process group and SIGKILL the whole run once `marker`
    (RUN_DIR/checkpoints/step_N/COMPLETE) exists: the launch's group, then every rank's group from the
    heartbeats (the DeepSpeed launcher runs in a session of its own, launch/job.py), waiting until each rank is
    gone, so a resume never races the run it replaces."""
    from medtrain.core.heartbeat import read_beats
    from medtrain.launch.job import local_process_state

    proc = subprocess.Popen([sys.executable, "-m", "medtrain", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if marker.exists() or proc.poll() is not None:
            break
        time.sleep(0.02)
    beats = read_beats(marker.parents[2] / "heartbeats")
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for beat in beats.values():
        if beat.pgid != os.getpgid(0):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(beat.pgid, signal.SIGKILL)
    code = proc.wait()
    for beat in beats.values():
        while time.time() < deadline + 30 and local_process_state(beat.pid) not in ("-", "Z"):
            time.sleep(0.05)
    return code


class LaunchedRun:
    """`medtrain launch` in its own session, its output in a log, with a cluster's faults injected from outside:
    signals to the ranks it started, found through their heartbeats."""

    def __init__(self, args: list[str], out: Path, env: dict | None = None):
        self.out = Path(out)
        self.log_path = self.out.parent / f"{self.out.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "medtrain", *args], cwd=REPO, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def beat(self, rank: int) -> dict | None:
        import json

        try:
            return json.loads((self.out / "heartbeats" / f"rank{rank}.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_for(self, rank: int, ready, timeout: float = 300) -> dict:
        """Poll rank's heartbeat (every 2 ms: a tiny checkpoint save lasts ~100 ms) until ready(beat)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            beat = self.beat(rank)
            if beat and ready(beat):
                return beat
            time.sleep(0.002)
        raise AssertionError(f"rank {rank} never got there (exit {self.proc.poll()}):\n{self.log[-4000:]}")

    def signal_at(self, rank: int, sig: int, ready, timeout: float = 300) -> dict:
        beat = self.wait_for(rank, ready, timeout)
        os.kill(beat["pid"], sig)
        beat["signalled_at"] = time.time()
        return beat

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"launch still running after {timeout} s:\n{self.log[-4000:]}") from None

    def restarts(self) -> list[dict]:
        import json

        path = self.out / "restarts.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def at_step(step: int, attempt: int = 0, phase: str = "step"):
    return lambda b: b["phase"] == phase and b["step"] >= step and b["attempt"] == attempt


def leftover_processes(marker: str) -> list[str]:
    """Processes on this machine (every loopback "node" is this machine) whose command line names `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmd and state != "Z":
            found.append(f"{proc.name} [{state}] {cmd[:200]}")
    return found


@contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` for the block (a full disk, for real); skips where mounting is refused."""
    import shutil

    import pytest

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def run_installed(wheel_env: dict, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    """`medtrain ARGS` of the wheel installed by the installed_wheel fixture, from outside the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{wheel_env['bin']}{os.pathsep}{env['PATH']}"
    return subprocess.run([str(wheel_env["bin"] / "medtrain"), *args], cwd=wheel_env["cwd"], env=env,
                          capture_output=True, text=True, timeout=timeout)
