"""`medtrain status` on run directories in each state, written as the launch and the ranks write them (recipe,
metrics, heartbeats, restarts, the lock, a checkpoint's manifest): the state, its exit code and what it says."""

import json
import os
import socket
import time

import pytest
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.launch.run_lock import LOCK_NAME
from medtrain.launch.status import read_status, render, sparkline


def _run_dir(root, steps=6, total=10, beats=("step", "step"), beat_age=1.0, restarts=(), export=False):
    root.mkdir()
    (root / "recipe.yaml").write_text("stage: continual\nmodel: tiny\ndata: d\noutput_dir: o\nhang_timeout: 60\n")
    with open(root / "metrics.jsonl", "w") as f:
        for s in range(1, steps + 1):
            rec = {"step": s, "total_steps": total, "loss": 8.0 - s * 0.5, "tokens_per_s": 1000.0 + s,
                   "elapsed_s": 10.0 * s, "eta_s": 10.0 * (total - s), "mfu": 0.25}
            f.write(json.dumps(rec | ({"val_loss": 7.0 - s * 0.1} if s % 3 == 0 else {})) + "\n")
    (root / "heartbeats").mkdir()
    for rank, phase in enumerate(beats):
        (root / "heartbeats" / f"rank{rank}.json").write_text(json.dumps({
            "rank": rank, "host": "node1", "pid": 1, "pgid": 1, "attempt": 0, "phase": phase, "step": steps,
            "time": time.time() - beat_age * (rank + 1), "code": 0 if phase == "exited" else None}))
    with open(root / "restarts.jsonl", "w") as f:
        for r in restarts:
            f.write(json.dumps(r) + "\n")
    if export:
        (root / "export").mkdir()
        (root / "export" / "config.json").write_text("{}")
    return root


def _hold(root, pid=None):
    (root / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": pid or os.getpid(),
                                              "started": "now", "command": "medtrain launch", "token": "t"}))


def test_a_running_run_shows_progress_eta_sparkline_and_marks_a_stale_rank(tmp_path):
    root = _run_dir(tmp_path / "r", beat_age=40.0)
    _hold(root)
    s = read_status(root)
    assert (s.state, s.exit_code, s.step, s.total) == ("running", 3, 6, 10)
    assert [b.stale for b in s.beats] == [False, True]  # 40 s and 80 s old, hang_timeout 60
    text = render(s)
    assert "RUNNING" in text and "6 / 10 (60.0%)" in text and "ETA 0:00:40" in text and "MFU 25.0%" in text
    assert "validation 6.4000" in text and sparkline(s.losses) in text and "STALE" in text


def test_a_finished_run_exits_0_and_names_its_export(tmp_path):
    root = _run_dir(tmp_path / "r", steps=10, beats=("exited", "exited"), export=True)
    s = read_status(root)
    assert (s.state, s.exit_code) == ("finished", 0) and "exported to" in s.why and not any(b.stale for b in s.beats)
    r = CliRunner().invoke(app, ["status", str(root)])
    assert r.exit_code == 0 and "FINISHED" in r.output


def test_a_failed_run_names_the_last_cause_and_every_restart(tmp_path):
    restarts = [{"cause": {"kind": "hang", "text": "no step for 60 s on rank 1"}, "reached_step": 4,
                 "action": "restarted"},
                {"cause": {"kind": "exit", "text": "exit code 1"}, "reached_step": 6, "action": "gave_up"}]
    root = _run_dir(tmp_path / "r", beats=("exited", "exited"), restarts=restarts)
    s = read_status(root)
    assert (s.state, s.exit_code) == ("failed", 1) and "exit code 1" in s.why
    text = render(s)
    assert "restarts    1: no step for 60 s on rank 1 (step 4, restarted); exit code 1 (step 6, gave_up)" in text


def test_an_interrupted_run_is_stopped_and_resumable(tmp_path):
    restarts = [{"cause": {"kind": "interrupted", "signal": "SIGINT", "text": "stopped by SIGINT (Ctrl-C)"},
                 "reached_step": 6, "action": "stopped"}]
    root = _run_dir(tmp_path / "r", beats=("exited", "exited"), restarts=restarts)
    s = read_status(root)
    assert (s.state, s.exit_code) == ("stopped", 4) and "SIGINT" in s.why and "after step 6" in s.why


def test_a_lock_left_by_a_dead_launch_does_not_count_as_running(tmp_path):
    root = _run_dir(tmp_path / "r", beats=("step", "step"))
    _hold(root, pid=2 ** 22 + 12345)  # no such process
    assert read_status(root).state == "failed"


def test_a_detached_slurm_run_asks_slurm_and_says_so_without_scontrol(tmp_path, monkeypatch):
    root = _run_dir(tmp_path / "r", steps=0, beats=())
    (root / LOCK_NAME).write_text(json.dumps({"host": "login1", "pid": 7, "started": "now", "command": "medtrain "
                                              "launch --detach", "token": "t", "slurm_job": "4242"}))
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm commands here
    s = read_status(root)
    assert s.slurm == ("4242", "UNKNOWN (no scontrol here)") and "slurm       job 4242" in render(s)
    assert (s.state, s.exit_code) == ("unknown", 6) and "where squeue works" in s.why


def test_not_a_run_directory_is_a_user_error(tmp_path):
    r = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert r.exit_code == 2 and "not a run directory" in r.output


@pytest.mark.parametrize("values,line", [([3.0, 2.0, 1.0], "█▅▁"), ([1.0, 1.0], "▁▁"), ([], "")])
def test_sparkline_spans_the_range(values, line):
    assert sparkline(values) == line
