from pathlib import Path

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.core.model_specs import NAMED
from medtrain.core.recipe import load_recipe
from medtrain.launch.hostfile import read_hostfile
from medtrain.launch.plan import make_plan, model_state_bytes

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "recipes/paper/continual_llama2_13b.yaml"


def test_llama2_13b_parameter_count_matches_the_published_size():
    assert abs(NAMED["llama2-13b"].num_params() - 13_015_864_320) == 0
    assert abs(NAMED["llama2-7b"].num_params() - 6_738_415_616) == 0


def test_model_state_arithmetic_is_anchored_to_deepspeeds_estimator():
    """DeepSpeed's estimate is 18 B/param (fp16 param, fp32 grad, Adam fp32 master+m+v) + 4 B x largest layer;
    ours also counts the fp16 gradient partition that lives beside the fp32 copy at the step: exactly +2 B/param."""
    shape = NAMED["llama2-13b"]
    n, largest = shape.num_params(), shape.largest_module_params()
    for nodes, per_node in ((20, 6), (1, 8), (4, 4)):
        world = nodes * per_node
        _, ds_gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=n, largest_layer_params=largest, num_gpus_per_node=per_node, num_nodes=nodes,
            cpu_offload=False, cpu_offload_params=False, zero_init=True)
        ours = sum(model_state_bytes(n, largest, world, "adamw", "fp16").values())
        assert abs(ours - (ds_gpu + 2 * n / world)) < 1.0
        adafactor = sum(model_state_bytes(n, largest, world, "adafactor", "fp16").values())
        assert abs((ours - adafactor) - 4 * n / world) < 1.0  # unfactored Adafactor: 4 B/param, Adam: 8


def test_paper_recipe_fits_on_v100x20_with_3037_steps():
    plan = make_plan(load_recipe(PAPER), read_hostfile(REPO / "hostfiles/v100x20"))
    assert plan.fits and plan.world_size == 120 and plan.accumulation == 1
    assert plan.steps_per_epoch == 3037 and plan.warmup == 92


def test_plan_command_prints_table_and_fits():
    r = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", str(REPO / "hostfiles/v100x20")])
    assert r.exit_code == 0, r.output
    for row in ("fp32 master weights", "adafactor state, unfactored", "activation checkpoints", "largest gathered",
                "compute", "verdict      FITS"):
        assert row in r.output


def test_plan_exits_2_when_it_does_not_fit(tmp_path):
    hosts = tmp_path / "one"
    hosts.write_text("node01 slots=6\n")
    r = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", str(hosts), "--set", "global_batch=6"])
    assert r.exit_code == 2 and "DOES NOT FIT" in r.output


def test_plan_refuses_a_world_size_that_breaks_the_batch(tmp_path):
    hosts = tmp_path / "seven"
    hosts.write_text("node01 slots=7\n")
    r = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", str(hosts)])
    assert r.exit_code == 2
    assert "global_batch=120 is not divisible by micro_batch=1 x world_size=7 = 7" in r.output


def test_plan_and_trainer_share_one_flops_formula():
    from medtrain.core.flops import flops_per_token, utilisation

    shape = NAMED["llama2-13b"]
    f = flops_per_token(shape, 4096, recompute=True)
    n = shape.num_params() - 32000 * 5120
    assert f.model == 6 * n + 12 * 40 * 5120 * 4096 and f.hardware == pytest.approx(f.model * 4 / 3)
    u = utilisation(tokens_per_s=120 * 1000, world=120, flops=f, peak_tflops=125)
    assert u["mfu"] == pytest.approx(1000 * f.model / 125e12) and u["hfu"] == pytest.approx(u["mfu"] * 4 / 3)
    plan = make_plan(load_recipe(PAPER), read_hostfile(REPO / "hostfiles/v100x20"))
    assert plan.hardware.peak_tflops == 125.0  # from the v100-zero3-fp16 preset
    mean_len = plan.data.tokens / plan.data.samples
    assert plan.flops == pytest.approx(flops_per_token(plan.shape, mean_len, True).model * plan.data.tokens)


def test_max_steps_stops_the_run_but_keeps_the_full_schedule():
    recipe = load_recipe(PAPER, ["max_steps=10"])
    plan = make_plan(recipe, read_hostfile(REPO / "hostfiles/v100x20"))
    assert plan.total_steps == 10 and plan.spec.schedule_steps == 3037 and plan.warmup == 92
    assert plan.spec.schedule == {"type": "linear", "lr": recipe.lr, "warmup_steps": 92, "schedule_steps": 3037}
    assert "stops after max_steps 10" in plan.render()


SHAPE = ["--set", "model=llama2-13b"]  # the paper recipe sized by a named shape instead of its hub id


def test_a_named_shape_is_planned_but_never_trained_without_init_random(tmp_path, tiny_sets):
    from medtrain.core.recipe import RecipeError

    r = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", str(REPO / "hostfiles/v100x20"), *SHAPE])
    assert "weights      NONE: 'llama2-13b' is a named shape" in r.output
    for mode in (["--dry-run"], ["--check"], []):  # the dry run checks what the launch checks
        r = CliRunner().invoke(app, ["launch", "--recipe", str(PAPER), "--hosts", str(REPO / "hostfiles/v100x20"),
                                     *mode, *SHAPE])
        assert r.exit_code == 2 and "named shape with no weights" in r.output
    random = CliRunner().invoke(app, ["launch", "--recipe", str(PAPER), "--hosts", str(REPO / "hostfiles/v100x20"),
                                      "--dry-run", *SHAPE, "--set", "init=random", *tiny_sets])
    assert "weights: random initialisation of the named shape llama2-13b" in random.output
    with pytest.raises(RecipeError, match="init: random builds a named shape"):
        load_recipe(PAPER, ["model=/models/Llama-2-13b-hf", "init=random"])


def test_dry_run_and_launch_of_a_plan_that_does_not_fit_exit_2(tiny_sets):
    hosts = str(REPO / "hostfiles/v100x20")
    args = ["launch", "--recipe", str(PAPER), "--hosts", hosts, "--set", "micro_batch=16", "--set",
            "global_batch=1920", *SHAPE, *tiny_sets]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 2 and "DOES NOT FIT" in dry.output
    for mode in (["--check"], []):
        real = CliRunner().invoke(app, [*args, *mode, "--set", "init=random"])
        assert real.exit_code == 2 and "DOES NOT FIT (" in real.output


def test_a_preset_carries_its_memory_and_precision_into_plan_and_config(tmp_path):
    hosts = str(REPO / "hostfiles/v100x20")
    r = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", hosts, "--set", "preset=h100-zero3-bf16"])
    assert "FITS (7.19 GiB of 80.0 GiB)" in r.output
    assert "preset h100-zero3-bf16 recommends bf16; this recipe trains in fp16" in r.output
    r = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", hosts, "--set",
                                 "preset=a100-40gb-zero3-bf16", "--set", "precision=bf16"])
    assert "of 40.0 GiB" in r.output and "warning" not in r.output
    c = CliRunner().invoke(app, ["config", "deepspeed", "--preset", "h100-zero3-bf16", "--recipe", str(PAPER),
                                 "--out", str(tmp_path / "ds.json")])
    assert c.exit_code == 0 and "warning: preset h100-zero3-bf16 recommends bf16" in c.output


def test_plan_says_the_smallest_change_that_fits_and_flags_what_is_probably_not_meant(tiny_sets):
    hosts = str(REPO / "hostfiles/v100x20")
    big = ["--set", "micro_batch=16", "--set", "global_batch=1920"]
    r = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", hosts, *SHAPE, *big])
    assert r.exit_code == 2
    [advice] = [line for line in r.output.splitlines() if line.startswith("to fit")]
    assert "micro_batch 8 (from 16)" in advice and "seq_len 2048 (from 4096)" in advice
    launch = CliRunner().invoke(app, ["launch", "--recipe", str(PAPER), "--hosts", hosts, *SHAPE, *big, "--dry-run",
                                      *tiny_sets])
    assert launch.exit_code == 2 and "fits with micro_batch 8 (from 16)" in launch.output
    small = CliRunner().invoke(app, ["plan", "--recipe", str(PAPER), "--hosts", hosts, *SHAPE, *tiny_sets])
    assert "where the recipe expects 364,420 (expected_samples)" in small.output
    assert "checkpoint_every 750 is beyond this run's" in small.output
