"""A prep killed midway leaves no dataset that looks complete (a real prep process, SIGKILLed from outside)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from train_fixtures import (
    REPO,
    SAMPLES,
)


def test_a_killed_prep_leaves_no_dataset_that_looks_complete(tiny, tmp_path):
    big = tmp_path / "big.jsonl"
    lines = (SAMPLES / "huatuo_sample.jsonl").read_text()
    big.write_text(lines * 300)
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "medtrain", "prep", "huatuo", "--input", str(big), "--tokenizer", str(tiny["tok"]),
            "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".ds.tmp-*")):
        time.sleep(0.01)
    time.sleep(0.3)
    assert proc.poll() is None, "prep finished before it could be killed; give it more input"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed prep left a dataset directory behind"
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "manifest.json").is_file()
