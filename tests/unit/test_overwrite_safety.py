"""`--overwrite` replaces only what medtrain made: a directory holding a person's files is refused by every
command that takes the flag, before any work, and the files are still there afterwards; the current directory,
its parents and the home directory never go. What medtrain publishes honours the umask."""

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.core.publish import OUTPUT_MARKER, ExistsError, publish_dir, staging_dir
from medtrain.data_prep.samples import DIR as SAMPLES

# every command with --overwrite, with arguments that would otherwise run (the refusal must come first)
COMMANDS = {
    "export": ["export", "--checkpoint", "nowhere"],
    "eval cmexam": ["eval", "cmexam", "--predictions", "p.jsonl", "--data", "d.csv"],
    "eval mmlu": ["eval", "mmlu", "--model", "m", "--data", "d"],
    "eval cmmlu": ["eval", "cmmlu", "--model", "m", "--data", "d"],
    "report": ["report", "runs"],
    "tokenizer": ["tokenizer", "--input", str(SAMPLES / "cmexam_train.csv")],
    "init-model": ["init-model", "--config", "tiny", "--tokenizer", "tok"],
    "prep cmexam": ["prep", "cmexam", "--input", str(SAMPLES / "cmexam_train.csv"), "--tokenizer", "tok"],
    "prep mix": ["prep", "mix", "--input", "a:1"],
}


def users_folder(root: Path) -> Path:
    folder = root / "thesis_project"
    (folder / "thesis").mkdir(parents=True)
    (folder / "thesis" / "chapter1.tex").write_text("years of work")
    (folder / "notes.txt").write_text("notes")
    return folder


@pytest.mark.parametrize("command", COMMANDS)
def test_overwrite_refuses_a_folder_medtrain_did_not_make(command, tmp_path):
    folder = users_folder(tmp_path)
    r = CliRunner().invoke(app, [*COMMANDS[command], "--out", str(folder), "--overwrite"])
    assert r.exit_code == 2, r.output
    assert "holds files medtrain did not write" in r.output and "notes.txt" in r.output, r.output
    assert (folder / "thesis" / "chapter1.tex").read_text() == "years of work"
    assert (folder / "notes.txt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["thesis_project"]  # nothing moved aside or staged


@pytest.mark.parametrize("command", [["hostfile"], ["config", "deepspeed"]])
def test_file_outputs_never_replace_a_directory(command, tmp_path):
    folder = users_folder(tmp_path)
    r = CliRunner().invoke(app, [*command, "--out", str(folder), "--overwrite"])
    assert r.exit_code == 2 and "is not a file" in r.output, r.output
    assert (folder / "thesis" / "chapter1.tex").read_text() == "years of work"


@contextmanager
def chdir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def test_never_the_current_directory_its_parents_or_home(tmp_path, monkeypatch):
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    (tmp_path / "project" / OUTPUT_MARKER).write_text("{}")  # even a marked one
    home = tmp_path / "home"
    (home / "x").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    with chdir(work):
        for target, why in ((".", "current directory"), ("..", "current directory"), (str(home), "home directory")):
            r = CliRunner().invoke(app, ["report", "runs", "--out", target, "--overwrite"])
            assert r.exit_code == 2 and why in r.output, (target, r.output)
    assert work.is_dir() and (home / "x").is_dir()


def test_medtrains_own_output_is_replaced_and_carries_the_marker(tmp_path):
    out = tmp_path / "tok"
    args = ["tokenizer", "--input", str(SAMPLES / "cmexam_train.csv"), "--out", str(out), "--vocab-size", "300"]
    assert CliRunner().invoke(app, args).exit_code == 0
    marker = (out / OUTPUT_MARKER).read_text()
    assert '"kind": "tokenizer"' in marker and '"command"' in marker
    r = CliRunner().invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no staging or old copy left


def test_an_empty_directory_is_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    tmp = staging_dir(tmp_path / "out")
    (tmp / "a.txt").write_text("a")
    publish_dir(tmp, tmp_path / "out", overwrite=True, kind="test")
    assert (tmp_path / "out" / "a.txt").is_file()


def test_publish_dir_itself_refuses_and_cleans_its_staging(tmp_path):
    folder = users_folder(tmp_path)
    tmp = staging_dir(folder)
    with pytest.raises(ExistsError, match="did not write"):
        publish_dir(tmp, folder, overwrite=True)
    assert not tmp.exists() and (folder / "notes.txt").is_file()


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_published_outputs_honour_the_umask(mask, tmp_path, hf_tok_texts):
    """safetensors writes its file 0600 whatever the umask; a shared export must be readable by the group."""
    old = os.umask(mask)
    try:
        tok, model = tmp_path / "tok", tmp_path / "model"
        assert CliRunner().invoke(app, ["tokenizer", "--input", hf_tok_texts, "--out", str(tok), "--vocab-size",
                                        "300"]).exit_code == 0
        r = CliRunner().invoke(app, ["init-model", "--config", "tiny", "--tokenizer", str(tok), "--out", str(model)])
        assert r.exit_code == 0, r.output
    finally:
        os.umask(old)
    assert (model / "model.safetensors").is_file()
    for root in (tok, model):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o777 if p.is_dir() else 0o666) & ~mask, (str(p), oct(mode))


@pytest.fixture
def hf_tok_texts() -> str:
    return str(SAMPLES / "cmexam_train.csv")
