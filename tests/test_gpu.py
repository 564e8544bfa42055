"""On one GPU, through the real launcher: continual and SFT steps in bf16 and fp16, exact resume, export equal to
the engine, eval on the GPU equal to the CPU, preflight over NCCL. Skipped without CUDA; bench/gpu/check.sh runs
them on the GPU machine (`pytest -m gpu`)."""

import json
import os

import pytest
from train_fixtures import REPO, check, cli, launch_args, make_tiny_data, run_and_kill_after

from medtrain.metrics import read_metrics

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CONT_RECIPE = "recipes/tiny/continual.yaml"
SFT_RECIPE = "recipes/tiny/sft.yaml"
PRECISIONS = {"bf16": "a100-zero3-bf16", "fp16": "v100-zero3-fp16"}  # the V100's precision, and the A100/H100's
STEPS = ("--set", "seq_len=64", "--set", "max_steps=6", "--set", "checkpoint_every=3", "--set", "keep_checkpoints=0",
         "--set", "lr=3e-3")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    path = tmp_path_factory.mktemp("hosts") / "one_gpu"
    path.write_text("localhost slots=1\n")
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tiny_gpu"))


def _precision(p: str) -> tuple[str, ...]:
    return ("--set", f"precision={p}", "--set", f"preset={PRECISIONS[p]}")


@pytest.fixture(scope="module")
def runs(tiny, hosts, tmp_path_factory):
    """One continual run per precision on the GPU (the resume and export tests read them)."""
    root = tmp_path_factory.mktemp("gpu_runs")
    out = {}
    for p in PRECISIONS:
        out[p] = root / p
        check(cli(*launch_args(CONT_RECIPE, tiny, out[p], "--set", f"data={tiny['huatuo']}", *STEPS,
                               *_precision(p), hosts=hosts)))
    return out


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_continual_trains_on_the_gpu(runs, precision):
    records = read_metrics(runs[precision] / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    assert records[-1]["loss"] < records[0]["loss"]
    assert all(r["max_mem_gib"] > 0 and r["mfu"] > 0 for r in records)
    if precision == "fp16":
        assert records[0]["loss_scale"] == 65536.0


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_export_equals_the_engine_on_the_gpu(runs, precision):
    check_file = json.loads((runs[precision] / "export" / "export_check.json").read_text())
    assert check_file["max_abs_diff"] <= 1e-3, check_file  # reloaded on the same GPU, in the training dtype


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_killed_gpu_run_resumes_with_identical_losses(runs, tiny, hosts, tmp_path, precision):
    out = tmp_path / "killed"
    args = launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *STEPS, *_precision(precision),
                       hosts=hosts)
    assert run_and_kill_after(args, out / "checkpoints" / "step_000003" / "COMPLETE") == -9
    check(cli(*args, "--resume"))
    reference, resumed = read_metrics(runs[precision] / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in reference]


def test_sft_from_the_continual_export_on_the_gpu(runs, tiny, hosts, tmp_path):
    out = tmp_path / "sft"
    check(cli(*launch_args(SFT_RECIPE, tiny, out, "--set", f"data={tiny['cmexam']}", "--set",
                           f"model={runs['bf16'] / 'export'}", "--set", "max_steps=3", "--set", "seq_len=512",
                           *_precision("bf16"), hosts=hosts)))
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def test_greedy_eval_on_the_gpu_equals_the_cpu(hf_model, tmp_path):
    from medtrain.eval.run import run_cmexam

    data = REPO / "data_prep" / "samples" / "cmexam_test.csv"
    kw = {"model_dir": hf_model, "limit": 8, "max_new_tokens": 24, "dtype": "fp32"}
    gpu = run_cmexam(data, tmp_path / "gpu", device="cuda", **kw)
    cpu = run_cmexam(data, tmp_path / "cpu", device="cpu", **kw)
    outputs = [[json.loads(x)["output"] for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
               for d in ("gpu", "cpu")]
    assert outputs[0] == outputs[1] and gpu["metrics"] == cpu["metrics"]
    assert gpu["config"]["device"].startswith("cuda")


@pytest.mark.parametrize("scoring", ["original", "harness"])
def test_multiple_choice_scores_on_the_gpu_equal_the_cpu(hf_model, tmp_path, scoring):
    """Left padding, shared rows and `logits_to_keep` on CUDA kernels: the same scores as the CPU in fp32; bf16
    (the GPU default for an fp32 checkpoint) runs and records its dtype."""
    from medtrain.eval.run import run_mc

    data = REPO / "data_prep" / "samples" / "mmlu"
    kw = {"scoring": scoring, "limit": 6, "batch_size": 4}
    gpu = run_mc("mmlu", hf_model, data, tmp_path / "gpu", device="cuda", dtype="fp32", **kw)
    cpu = run_mc("mmlu", hf_model, data, tmp_path / "cpu", device="cpu", dtype="fp32", **kw)
    scores = [[json.loads(x)["scores"] for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
              for d in ("gpu", "cpu")]
    assert len(scores[0]) == len(scores[1]) > 0
    for g, c in zip(*scores, strict=True):
        assert g == pytest.approx(c, abs=1e-3)
    assert gpu["metrics"]["acc"] == cpu["metrics"]["acc"]
    half = run_mc("mmlu", hf_model, data, tmp_path / "bf16", device="cuda", dtype="auto", **kw)
    assert half["config"]["device"].endswith(("bf16", "fp16")) and half["metrics"]["n"] == cpu["metrics"]["n"]


def test_preflight_all_reduces_over_nccl(tiny, hosts, tmp_path):
    r = cli("launch", "--hosts", hosts, "--launcher", "local", "--recipe", CONT_RECIPE, "--check",
            "--set", f"data={tiny['huatuo']}", "--set", f"tokenizer={tiny['tok']}",
            "--set", f"output_dir={tmp_path / 'run'}", "--set", "global_batch=2", "--set", "micro_batch=2",
            "--timeout", "120", env={**os.environ, "NCCL_DEBUG": "WARN"})
    assert r.returncode == 0 and "PREFLIGHT OK" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
