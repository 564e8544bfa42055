"""Shared, session-scoped training runs: each DeepSpeed launch costs ~10 s, so tests share them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data_prep" / "samples"


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "medtrain", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)
    return proc


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_tiny_data(root: Path) -> dict[str, Path]:
    from data_prep.pipeline import prep
    from data_prep.templates import ALPACA_HEADER
    from data_prep.tokenizer import train_bpe_tokenizer

    texts = (SAMPLES / "huatuo_sample.jsonl").read_text().splitlines()
    texts += (SAMPLES / "cmexam_train.csv").read_text().splitlines() + [ALPACA_HEADER] * 20
    tok = train_bpe_tokenizer(texts, root / "tok", vocab_size=800)
    quiet = {"log": lambda s: None, "workers": 1}
    prep("huatuo", [SAMPLES / "huatuo_sample.jsonl"], tok, root / "huatuo", seq_len=64, **quiet)
    prep("cmexam", [SAMPLES / "cmexam_train.csv"], tok, root / "cmexam", mode="with_reasoning", seq_len=512, **quiet)
    return {"tok": tok, "huatuo": root / "huatuo", "cmexam": root / "cmexam"}


def launch_args(recipe: str, data: dict, out: Path, *extra: str, hosts: str = "hostfiles/localhost",
                launcher: str = "local") -> list[str]:
    return ["launch", "--hosts", hosts, "--launcher", launcher, "--recipe", recipe,
            "--set", f"tokenizer={data['tok']}", "--set", f"output_dir={out}", *extra]


CONTINUAL = ("--set", "seq_len=64", "--set", "max_steps=12", "--set", "checkpoint_every=4",
             "--set", "keep_checkpoints=2", "--set", "lr=3e-3", "--set", "peak_tflops=0.5")


def run_and_kill_after(args: list[str], marker: Path, timeout: float = 300, env: dict | None = None) -> int:
    """Start `medtrain launch` in its own process group and SIGKILL the whole group once `marker` exists."""
    proc = subprocess.Popen([sys.executable, "-m", "medtrain", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if marker.exists() or proc.poll() is not None:
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()
