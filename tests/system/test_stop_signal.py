"""SIGUSR1 to `medtrain launch` (no scheduler): every rank saves at the end of its step and stops, the launch
says where and how to go on, and the resumed run trains exactly the uninterrupted run's steps."""

import signal

import pytest
from train_fixtures import CONT_RECIPE, CONTINUAL, LaunchedRun, at_step, check, cli, launch_args

from medtrain.core.checkpoint_files import survey
from medtrain.metrics import read_metrics


@pytest.mark.launch
def test_sigusr1_saves_and_stops_then_resume_matches_the_uninterrupted_run(tiny, continual_run, tmp_path):
    out = tmp_path / "stopped"
    args = launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *CONTINUAL)
    run = LaunchedRun(args, out)
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
    check(cli(*args, "--resume"))
    got, want = read_metrics(out / "metrics.jsonl"), read_metrics(continual_run / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
