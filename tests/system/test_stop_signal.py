"""SIGUSR1 to `medtrain launch` (no scheduler): every rank saves at the end of its step and stops, the launch
says where and how to go on, and the resumed run trains exactly the uninterrupted run's steps. Ctrl-C ends the job
on every node and is recorded and said the same way; the steps it logged after its checkpoint are logged once.
`--resume` on the finished run starts nothing. One run, three launches, so the stop kinds share the set-up."""

import json
import os
import signal
import stat

import pytest
from train_fixtures import CONT_RECIPE, CONTINUAL, LaunchedRun, at_step, check, cli, launch_args

from medtrain.core.checkpoint_files import survey
from medtrain.train.metrics import read_metrics


@pytest.mark.launch
def test_sigusr1_saves_and_stops_then_resume_matches_the_uninterrupted_run(tiny, continual_run, tmp_path):
    out = tmp_path / "stopped"
    args = launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *CONTINUAL)
    old = os.umask(0o002)  # a group's shared project directory: everything the run writes is group-writable
    try:
        run = LaunchedRun(args, out)
    finally:
        os.umask(old)
    run.wait_for(0, at_step(2))
    run.proc.send_signal(signal.SIGUSR1)
    code = run.wait()
    assert code == 128 + signal.SIGUSR1, run.log[-3000:]
    said = [line for line in run.log.splitlines() if "as asked (SIGUSR1)" in line]
    assert len(said) == 1 and "resume with --resume" in said[0], run.log[-3000:]
    step = int(said[0].split("stopped at step ")[1].split()[0])
    assert 2 <= step < 12
    complete = [v.step for v in survey(out / "checkpoints") if v.state == "complete"]
    assert complete[-1] == step, complete
    assert not (out / "restarts.jsonl").exists()  # not a failure
    shown = check(cli("logs", str(out), "--rank", "0")).stdout  # rank 0's own output, kept in the run
    assert f"stopped at step {step} of 12 as asked" in shown
    assert "as asked (SIGUSR1)" in check(cli("logs", str(out))).stdout  # the console as the user saw it
    assert_modes(out, 0o002)
    assert_modes(continual_run, 0o022)  # the suite's shared run, under the usual umask
    interrupted_after_step_8_then_resumed(args, out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)), steps  # each step once in the file itself, not only through read_metrics
    got, want = read_metrics(out / "metrics.jsonl"), read_metrics(continual_run / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert [r["loss"] for r in got] == [r["loss"] for r in want]

    started = sorted((out / "logs").glob("rank*.log"))
    again = check(cli(*args, "--resume"))
    assert f"{out} is already complete: step 12 of 12, exported to {out / 'export'}; nothing to resume" \
        in again.stdout, again.stdout + again.stderr
    assert sorted((out / "logs").glob("rank*.log")) == started and "plan:" not in again.stdout  # nothing started


def interrupted_after_step_8_then_resumed(args: list[str], out) -> None:
    """Resume, freeze both ranks once rank 0 has logged step 9 (the checkpoint at 8 written), Ctrl-C the launcher:
    it ends the job, records the interruption in restarts.jsonl and launch.log, names checkpoint 8 and --resume;
    the next resume rewinds metrics.jsonl to step 8 and finishes."""
    run = LaunchedRun([*args, "--resume"], out)
    for beat in [run.wait_for(0, at_step(10)), run.beat(1)]:
        os.kill(beat["pid"], signal.SIGSTOP)  # the run cannot finish before the Ctrl-C lands
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) >= 9
    run.proc.send_signal(signal.SIGINT)
    assert run.wait() == 128 + signal.SIGINT, run.log[-3000:]
    (record,) = [r for r in run.restarts() if r["cause"]["kind"] == "interrupted"]
    assert record["cause"]["signal"] == "SIGINT" and record["action"] == "stopped" and record["resume_step"] == 8
    said = [line for line in run.log.splitlines() if "stopped by SIGINT (Ctrl-C)" in line]
    assert len(said) == 1 and "newest verified checkpoint: step 8" in said[0] and "--resume" in said[0], run.log
    assert "error: training exited" not in run.log
    assert said[0] in check(cli("logs", str(out))).stdout  # launch.log holds it too
    resumed = check(cli(*args, "--resume"))
    assert "after step 8, logged before the run stopped" in resumed.stdout + resumed.stderr


def assert_modes(run, mask: int) -> None:
    """Checkpoints (DeepSpeed's torch.save), logs, metrics and the run's own files: as the umask says."""
    files = [p for p in run.rglob("*") if p.is_file() and "heartbeats" not in p.parts and "hangs" not in p.parts]
    assert any("checkpoints" in p.parts for p in files) and any(p.name == "metrics.jsonl" for p in files)
    def right(mode: int) -> bool:  # DeepSpeed's copied zero_to_fp32.py keeps its exec bits: readable is enough
        return mode & 0o044 == 0o044 if mode & 0o100 else mode == 0o666 & ~mask

    wrong = [(str(p), oct(stat.S_IMODE(p.stat().st_mode))) for p in files if not right(stat.S_IMODE(p.stat().st_mode))]
    assert wrong == [], wrong[:10]
