"""Every command that writes, on a disk too small for what it writes (a real tmpfs): exit 2, one line naming the
mount and the room, and nothing left behind, not even a hidden staging folder. A damaged model directory is one
line naming the file."""

import json
import shutil

import pytest
from train_fixtures import small_disk
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.data_prep.samples import DIR as SAMPLES


def assert_one_line_and_nothing_left(r, disk):
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(disk) in errors[0], r.output
    assert "no space left" in errors[0] and "free" in errors[0], r.output
    assert "Traceback" not in r.output
    assert list(disk.iterdir()) == [], [p.name for p in disk.iterdir()]


@pytest.mark.parametrize("command", ["prep", "tokenizer", "eval mmlu", "report"])
def test_a_full_disk_is_one_line_and_leaves_nothing(command, tmp_path, tiny, hf_model):
    if command == "report":  # a run whose loss curve and report outgrow the disk
        run = tmp_path / "run"
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 5 - i / 1000, "lr": 1e-3,
                                                               "tokens_per_s": 1.0}) + "\n" for i in range(4000)))
    size = {"prep": "200k", "tokenizer": "60k", "eval mmlu": "8k", "report": "20k"}[command]
    with small_disk(tmp_path / "small", size) as disk:
        out = str(disk / "out")
        args = {"prep": ["prep", "cmexam", "--input", str(SAMPLES / "cmexam_train.csv"), "--input",
                         str(SAMPLES / "cmexam_train.csv"), "--tokenizer", str(tiny["tok"]), "--out", out],
                "tokenizer": ["tokenizer", "--input", str(SAMPLES / "cmexam_train.csv"), "--out", out,
                              "--vocab-size", "2000"],
                "eval mmlu": ["eval", "mmlu", "--model", str(hf_model), "--data", str(SAMPLES / "mmlu"), "--out",
                              out, "--limit", "20"],
                "report": ["report", str(tmp_path / "run"), "--out", out]}[command]
        assert_one_line_and_nothing_left(CliRunner().invoke(app, args), disk)


@pytest.mark.parametrize("damage", ["truncated weights", "config not JSON"])
def test_a_damaged_model_directory_is_one_line_naming_the_file(damage, tmp_path, hf_model):
    model = tmp_path / "model"
    shutil.copytree(hf_model, model)
    if damage == "truncated weights":
        weights = model / "model.safetensors"
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
        name, why = "model.safetensors", "truncated"
    else:
        (model / "config.json").write_text('{"model_type": "llama", ')
        name, why = "config.json", "not valid JSON"
    r = CliRunner().invoke(app, ["eval", "mmlu", "--model", str(model), "--data", str(SAMPLES / "mmlu"), "--out",
                                 str(tmp_path / "out"), "--limit", "2"])
    assert r.exit_code == 2, r.output
    assert f"{model / name}: " in r.output and why in r.output and "Traceback" not in r.output
