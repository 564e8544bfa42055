"""One run per output directory: the lock names its holder, refuses a second live launch, and takes over from a
holder that is gone (dead pid on this host, or a lock another host stopped refreshing) with a line saying so."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from medtrain.launch.run_lock import LOCK_NAME, STALE_SECONDS, RunLock, RunLockedError, refuse_if_held


def foreign_lock(run_dir, host="node07", pid=4242, age=0.0, **extra):
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    lock.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-12-06T01:00:00", "token": "t",
                                "command": "medtrain launch --recipe paper/continual_llama2_13b", **extra}))
    old = time.time() - age
    os.utime(lock, (old, old))
    return lock


def test_a_second_launch_is_refused_naming_the_holder_and_release_frees_it(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    try:
        holder = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        assert holder["started"] and holder["command"].startswith("medtrain")
        # another process (this one's own token is not inherited by a second launch)
        probe = ("import sys; from pathlib import Path; from medtrain.launch.run_lock import RunLock\n"
                 "RunLock(Path(sys.argv[1])).acquire()")
        env = {k: v for k, v in os.environ.items() if k != "MEDTRAIN_RUN_LOCK"}
        r = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "run")], capture_output=True, text=True,
                           env=env)
        assert r.returncode != 0 and "is in use by a live medtrain launch on" in r.stderr
        assert f"pid {os.getpid()}" in r.stderr and "output_dir" in r.stderr
    finally:
        first.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    RunLock(tmp_path / "run").acquire().release()


def test_a_lock_whose_process_died_on_this_host_is_taken_over_with_a_line(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    foreign_lock(tmp_path, host=socket.gethostname(), pid=dead.pid)
    lock = RunLock(tmp_path).acquire()
    said = caplog.messages
    assert said and "taking over" in said[0] and "no longer exists" in said[0] and f"pid {dead.pid}" in said[0]
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_another_hosts_fresh_lock_is_refused_and_a_stale_one_taken_over(tmp_path, caplog):
    foreign_lock(tmp_path, age=5)
    with pytest.raises(RunLockedError, match="node07 \\(pid 4242"):
        RunLock(tmp_path).acquire()
    with pytest.raises(RunLockedError):
        refuse_if_held(tmp_path)  # what a dry run and --check ask
    foreign_lock(tmp_path, age=STALE_SECONDS + 60)
    RunLock(tmp_path).acquire().release()
    assert "not refreshed for" in caplog.messages[0]


def test_a_detached_slurm_job_keeps_the_lock_after_the_launch_returns(tmp_path):
    lock = RunLock(tmp_path).acquire()
    lock.hand_to_slurm("1234")
    lock.release()
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["slurm_job"] == "1234"
