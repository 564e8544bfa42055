import json
from pathlib import Path

import pytest
from deepspeed.runtime.config import DeepSpeedConfig
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.core.ds_config import PRESETS, ConfigError, build_ds_config

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "recipes/paper/continual_llama2_13b.yaml"


def _generate(tmp_path, *extra):
    out = tmp_path / "ds.json"
    r = CliRunner().invoke(app, ["config", "deepspeed", "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return out


def test_checked_in_v100_config_regenerates_byte_identically(tmp_path):
    out = _generate(tmp_path, "--preset", "v100-zero3-fp16", "--recipe", str(PAPER), "--hosts",
                    str(REPO / "hostfiles/v100x20"))
    assert out.read_text() == (REPO / "ds_configs/zero3_v100_fp16.json").read_text()


def test_paper_config_is_stage3_fp16_batch_120_with_computed_warmup():
    """The checked-in JSON, and the warmup the ranks run beside it: 3% of the paper's 3,037 steps, rounded up."""
    from medtrain.core.recipe import load_recipe
    from medtrain.launch.hostfile import read_hostfile
    from medtrain.launch.plan import make_plan

    plan = make_plan(load_recipe("paper/continual_llama2_13b"), read_hostfile(REPO / "hostfiles/v100x20"))
    assert plan.total_steps == 3037 and plan.spec.schedule == {"type": "linear", "lr": 2e-05, "warmup_steps": 92,
                                                               "schedule_steps": 3037}
    assert plan.spec.ds_config == json.loads((REPO / "ds_configs/zero3_v100_fp16.json").read_text())
    c = json.loads((REPO / "ds_configs/zero3_v100_fp16.json").read_text())
    assert c["zero_optimization"]["stage"] == 3 and c["fp16"]["enabled"] and not c["bf16"]["enabled"]
    assert c["train_batch_size"] == 120 == c["train_micro_batch_size_per_gpu"] * c["gradient_accumulation_steps"] * 120
    assert c["fp16"]["loss_scale"] == 0  # dynamic
    assert c["zero_allow_untested_optimizer"] and c["gradient_clipping"] == 1.0
    assert c["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert "scheduler" not in c  # medtrain runs its own schedule (RUN_DIR/schedule.json); none that never runs
    assert c["zero_optimization"]["reduce_bucket_size"] == 5120 * 5120  # HF "auto": hidden^2
    assert c["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 5120 * 5120)
    assert c["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * 5120


def _as_one_rank(config):
    """DeepSpeedConfig checks the batch triple against the live world size (1 outside a launch)."""
    c = dict(config)
    c["train_batch_size"] = c["train_micro_batch_size_per_gpu"] * c["gradient_accumulation_steps"]
    return c


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_is_parsed_by_deepspeeds_own_config_class(tmp_path, preset):
    config = json.loads(_generate(tmp_path, "--preset", preset).read_text())
    ds = DeepSpeedConfig(_as_one_rank(config))
    assert ds.zero_optimization_stage == 3
    assert ds.float16_config.enabled == (PRESETS[preset].precision == "fp16")
    assert ds.bfloat16_config.enabled == (PRESETS[preset].precision == "bf16")
    assert ds.zero_allow_untested_optimizer and ds.gradient_clipping == 1.0
    assert ds.scheduler_name is None


def test_checked_in_config_is_parsed_by_deepspeed():
    c = json.loads((REPO / "ds_configs/zero3_v100_fp16.json").read_text())
    ds = DeepSpeedConfig(_as_one_rank(c))
    assert ds.float16_config.enabled and ds.float16_config.loss_scale == 0  # dynamic loss scaling
    assert ds.zero_config.gather_16bit_weights_on_model_save and ds.zero_config.overlap_comm


def test_batch_size_is_computed_never_typed():
    c = build_ds_config(preset="a100-zero3-bf16", precision=None, micro_batch=2, accumulation=5, world_size=12,
                        hidden_size=64, max_grad_norm=0.5)
    assert c["train_batch_size"] == 120 and c["bf16"]["enabled"] and c["gradient_clipping"] == 0.5


def test_v100_refuses_bf16():
    with pytest.raises(ConfigError, match="v100-zero3-fp16 does not support bf16"):
        build_ds_config(preset="v100-zero3-fp16", precision="bf16", micro_batch=1, accumulation=1, world_size=1,
                        hidden_size=64)


def test_unknown_preset_exits_2_and_writes_nothing(tmp_path):
    r = CliRunner().invoke(app, ["config", "deepspeed", "--preset", "tpu", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "unknown preset 'tpu'" in r.output
    assert not (tmp_path / "x.json").exists()
