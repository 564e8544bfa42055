"""A launch into a directory that already holds a run: refused without --resume (dry run and launch alike), with
the ways out; --overwrite moves the old run aside, never deletes it; the lock is taken before any file of the
run is written."""

import json

import pytest
from train_fixtures import CONT_RECIPE, REPO
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.launch.run import prepare_launch
from medtrain.launch.run_lock import LOCK_NAME, RunLockedError


@pytest.fixture
def finished_run(tmp_path):
    run = tmp_path / "continual"
    (run / "checkpoints" / "step_000004").mkdir(parents=True)
    (run / "checkpoints" / "step_000004" / "weights").write_text("w")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 4, "loss": 5.0}) + "\n")
    return run


def sets(tiny, run):
    return [f"data={tiny['huatuo']}", f"tokenizer={tiny['tok']}", f"output_dir={run}", "seq_len=64"]


def test_a_launch_into_a_finished_run_without_resume_is_refused_with_the_ways_out(finished_run, tiny, monkeypatch):
    monkeypatch.chdir(REPO)
    args = ["launch", "--hosts", "hostfiles/localhost", "--launcher", "local", "--recipe", CONT_RECIPE, "--dry-run"]
    for s in sets(tiny, finished_run):
        args += ["--set", s]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "already holds a run (1 checkpoint(s), newest step_000004, metrics.jsonl)" in r.output
    assert "--resume" in r.output and "--overwrite" in r.output and "nothing is deleted" in r.output
    assert CliRunner().invoke(app, [*args, "--resume"]).exit_code == 0


def test_overwrite_moves_the_old_run_aside_and_locks_the_new_one(finished_run, tiny, monkeypatch):
    monkeypatch.chdir(REPO)
    prepared = prepare_launch(CONT_RECIPE, REPO / "hostfiles" / "localhost", "local",
                              overrides=sets(tiny, finished_run), env=[], resume=False, dry_run=False, overwrite=True)
    try:
        aside = [p for p in finished_run.parent.iterdir() if p.name.startswith("continual.old-")]
        assert len(aside) == 1 and (aside[0] / "checkpoints" / "step_000004" / "weights").read_text() == "w"
        assert (finished_run / LOCK_NAME).is_file() and (finished_run / "recipe.yaml").is_file()
        assert not (finished_run / "metrics.jsonl").exists()
        with pytest.raises(RunLockedError, match="in use by a live medtrain launch"):
            monkeypatch.delenv("MEDTRAIN_RUN_LOCK")  # as a second launch sees it
            prepare_launch(CONT_RECIPE, REPO / "hostfiles" / "localhost", "local",
                           overrides=sets(tiny, finished_run), env=[], resume=True, dry_run=True)
    finally:
        prepared.lock.release()
    assert not (finished_run / LOCK_NAME).exists()


@pytest.mark.parametrize("tokenizer", ["missing", "another vocabulary"])
def test_a_dry_run_checks_the_tokenizer_as_the_launch_does(tokenizer, tiny, tmp_path, monkeypatch, hf_model):
    monkeypatch.chdir(REPO)
    tok = tmp_path / "no_such_tokenizer" if tokenizer == "missing" else hf_model  # hf_model: a 600-token BPE
    args = ["launch", "--hosts", "hostfiles/localhost", "--launcher", "local", "--recipe", CONT_RECIPE, "--set",
            f"data={tiny['huatuo']}", "--set", f"tokenizer={tok}", "--set", f"output_dir={tmp_path / 'run'}"]
    for mode in (["--dry-run"], []):
        r = CliRunner().invoke(app, [*args, *mode])
        assert r.exit_code == 2, r.output
        if tokenizer == "missing":
            assert "no_such_tokenizer" in r.output and ("does not exist" in r.output or "no such file" in r.output)
        else:
            assert "split text into different ids" in r.output
        assert not (tmp_path / "run").exists()
