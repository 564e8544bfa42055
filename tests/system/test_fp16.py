"""fp16 — the paper's precision and the only one a V100 has — on the real DeepSpeed engine (ZeRO-3, dynamic loss
scaling), made runnable on this CPU by tests/fp16_cpu/sitecustomize.py on the ranks' PYTHONPATH."""

import json
import os

import pytest
from train_fixtures import CONTINUAL, REPO, check, cli, launch_args, run_and_kill_after

from medtrain.train.metrics import read_metrics

CONT_RECIPE = "recipes/tiny/continual.yaml"
FP16 = ("--set", "precision=fp16")


@pytest.fixture(scope="session")
def fp16_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "tests" / "fp16_cpu"), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="session")
def fp16_run(tiny, fp16_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "continual"
    check(cli(*launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *CONTINUAL, *FP16),
              env=fp16_env))
    return out


@pytest.mark.launch
def test_fp16_trains_with_dynamic_loss_scale_from_65536(fp16_run):
    records = read_metrics(fp16_run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 13))
    assert records[0]["loss_scale"] == 65536.0 and all("skipped_steps" in r for r in records)
    assert records[-1]["loss"] < records[0]["loss"] - 0.5
    state = json.loads((fp16_run / "checkpoints" / "step_000012" / "trainer_state.json").read_text())
    assert state["precision"] == "fp16"
    print(f"fp16: loss {records[0]['loss']:.3f} -> {records[-1]['loss']:.3f}, loss scale "
          f"{records[-1]['loss_scale']:g}, {records[-1]['skipped_steps']} steps skipped")


@pytest.mark.launch
def test_fp16_export_is_fp16_and_matches_the_engine(fp16_run):
    from safetensors.torch import load_file

    weights = load_file(fp16_run / "export" / "model.safetensors")
    assert {str(t.dtype) for t in weights.values()} == {"torch.float16"}
    assert json.loads((fp16_run / "export" / "export_check.json").read_text())["max_abs_diff"] == 0.0


@pytest.mark.launch
def test_fp16_overflow_skips_steps_and_a_collapsed_scale_stops_the_run(tiny, fp16_env, tmp_path):
    """An absurd lr blows the weights up after one step: every later step overflows, DeepSpeed skips it and
    halves the scale, and LossScaleWatch ends the run (exit 1) once the scale has sat at its floor."""
    out = tmp_path / "overflow"
    r = cli(*launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", "--set", "seq_len=64",
                         "--set", "max_steps=60", "--set", "lr=1e4", "--set", "loss_scale_patience=3", *FP16),
            env=fp16_env)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "loss scale has sat at its minimum" in r.stdout + r.stderr
    records = read_metrics(out / "metrics.jsonl")
    assert records[-1]["skipped_steps"] >= 16 and records[-1]["loss_scale"] == 1.0
    assert len(records) < 60 and not (out / "export").exists()
    print(f"fp16 overflow: stopped at step {records[-1]['step']} with {records[-1]['skipped_steps']} skipped steps")


@pytest.mark.launch
def test_fp16_killed_run_resumes_with_identical_losses_and_loss_scale(fp16_run, tiny, fp16_env, tmp_path):
    out = tmp_path / "killed16"
    args = launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *CONTINUAL, *FP16)
    code = run_and_kill_after(args, out / "checkpoints" / "step_000004" / "COMPLETE", env=fp16_env)
    assert code == -9, "the run finished before it could be killed"
    check(cli(*args, "--resume", env=fp16_env))
    reference, resumed = read_metrics(fp16_run / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [(r["step"], r["loss"], r["loss_scale"], r["skipped_steps"]) for r in resumed] == \
        [(r["step"], r["loss"], r["loss_scale"], r["skipped_steps"]) for r in reference]
