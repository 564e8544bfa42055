"""`medtrain config deepspeed` -> edit -> `medtrain launch --ds-config`: the edited JSON is what the ranks get
(run_spec.json and RUN_DIR/ds_config.json), after a check against the recipe that names every conflict on a line
of its own; a shrunk run keeps the user's settings with the new batch split."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.core.ds_config import merge_ds_config

REPO = Path(__file__).resolve().parents[2]
HOSTS = REPO / "hostfiles" / "localhost"


@pytest.fixture
def recipe(tiny, tmp_path):
    raw = yaml.safe_load((REPO / "recipes" / "tiny" / "continual.yaml").read_text())
    raw |= {"data": str(tiny["huatuo"]), "tokenizer": str(tiny["tok"]), "output_dir": str(tmp_path / "run"),
            "val_data": None, "seq_len": 64}
    path = tmp_path / "continual.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _written(recipe, tmp_path):
    out = tmp_path / "ds.json"
    r = CliRunner().invoke(app, ["config", "deepspeed", "--preset", "cpu-zero3", "--recipe", str(recipe), "--hosts",
                                 str(HOSTS), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, json.loads(out.read_text())


def test_an_edited_config_is_what_the_ranks_run(recipe, tmp_path):
    from medtrain.launch.run import prepare_launch

    out, config = _written(recipe, tmp_path)
    config["zero_optimization"]["reduce_bucket_size"] = 12345
    config["zero_optimization"]["overlap_comm"] = True
    config["train_batch_size"] = "auto"
    out.write_text(json.dumps(config))
    dry = CliRunner().invoke(app, ["launch", "--hosts", str(HOSTS), "--launcher", "local", "--recipe", str(recipe),
                                   "--ds-config", str(out), "--dry-run"])
    assert dry.exit_code == 0 and "your --ds-config, checked against the recipe" in dry.output, dry.output
    prepared = prepare_launch(recipe, HOSTS, "local", overrides=[], env=[], resume=False, dry_run=False,
                              ds_config=out)
    prepared.lock.release()
    run = tmp_path / "run"
    for ran in (json.loads((run / "run_spec.json").read_text())["ds_config"],
                json.loads((run / "ds_config.json").read_text())):
        assert ran["zero_optimization"]["reduce_bucket_size"] == 12345 and ran["zero_optimization"]["overlap_comm"]
        assert ran["train_batch_size"] == 8  # "auto": the recipe's 2 micro x 2 accum x 2 ranks


def test_every_conflict_with_the_recipe_is_a_line_of_its_own(recipe, tmp_path):
    out, config = _written(recipe, tmp_path)
    config["fp16"] = {"enabled": True}
    config["zero_optimization"]["stage"] = 2
    config["train_micro_batch_size_per_gpu"] = 3
    config["optimizer"] = {"type": "AdamW", "params": {"lr": 1e-4}}
    out.write_text(json.dumps(config))
    r = CliRunner().invoke(app, ["launch", "--hosts", str(HOSTS), "--launcher", "local", "--recipe", str(recipe),
                                 "--ds-config", str(out), "--dry-run"])
    assert r.exit_code == 2
    lines = [line.removeprefix("error: ") for line in r.output.strip().splitlines()]
    assert len(lines) == 4 and all(line.startswith(f"{out}: ") for line in lines), r.output
    text = r.output
    assert "train_micro_batch_size_per_gpu is 3, the recipe's batch is 2 micro x 2 accum" in text
    assert "fp16.enabled is true, the recipe trains in fp32" in text and "stage is 2" in text
    assert "has a 'optimizer' section" in text
    assert not (tmp_path / "run").exists()


def test_a_file_that_is_not_json_is_named_with_its_line(recipe, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "train_batch_size": 8,\n  oops\n}\n')
    r = CliRunner().invoke(app, ["launch", "--hosts", str(HOSTS), "--launcher", "local", "--recipe", str(recipe),
                                 "--ds-config", str(bad), "--dry-run"])
    assert r.exit_code == 2 and f"{bad}:3: not valid JSON" in r.output


def test_a_replanned_world_keeps_the_users_settings_and_takes_the_new_batch_split():
    computed = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
                "zero_optimization": {"stage": 3, "reduce_bucket_size": 100}}
    user = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
            "zero_optimization": {"reduce_bucket_size": 7, "offload_optimizer": {"device": "cpu"}}}
    merged = merge_ds_config(user, computed, batch_from_raw=False)
    assert merged["gradient_accumulation_steps"] == 4
    assert merged["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 7, "offload_optimizer": {"device": "cpu"}}
