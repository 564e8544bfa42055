"""On one GPU, through the real launcher: continual and SFT steps in bf16 and fp16, exact resume, export equal to
the engine, eval on the GPU equal to the CPU, preflight over NCCL. Skipped without CUDA; bench/gpu/check.sh runs
them on the GPU machine (`pytest -m gpu`)."""

import json
import os

import pytest
from train_fixtures import REPO, check, cli, launch_args, run_and_kill_after

from medtrain.train.metrics import read_metrics

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
    # run_and_kill_after ends every process of the run (its launcher and each rank's group, from the heartbeats)
    # and waits for them to go, so the resume below never races the run it replaces
    assert run_and_kill_after(args, out / "checkpoints" / "step_000003" / "COMPLETE") == -9
    check(cli(*args, "--resume"))
    reference, resumed = read_metrics(runs[precision] / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in reference]
    assert [r.get("loss_scale") for r in resumed] == [r.get("loss_scale") for r in reference]
    # On the CPU these losses are equal bit for bit. On CUDA they need not be: the embedding's backward adds with
    # atomics and cuBLAS may pick another reduction order, so two runs of the same steps differ in the last bits of
    # bf16/fp16 arithmetic, and the difference grows over the three steps after the resume. 2e-3 relative is ~16
    # bf16 ulps of the loss; a wrong resume (optimizer state, schedule or data order lost) moves it far more: lr
    # 3e-3 changes this tiny model's loss by > 5e-2 per step.
    for got, want in zip(resumed, reference, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=2e-3), (got["step"], got["loss"], want["loss"])


def test_sft_from_the_continual_export_on_the_gpu(runs, tiny, hosts, tmp_path):
    out = tmp_path / "sft"
    check(cli(*launch_args(SFT_RECIPE, tiny, out, "--set", f"data={tiny['cmexam']}", "--set",
                           f"model={runs['bf16'] / 'export'}", "--set", "max_steps=3", "--set", "seq_len=512",
                           *_precision("bf16"), hosts=hosts)))
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


NEAR_TIE = 1e-3  # logits closer than this may be ordered either way by fp32 kernels that sum in another order


def test_greedy_eval_on_the_gpu_equals_the_cpu(hf_model, tmp_path):
    """Greedy decoding on CUDA takes the CPU's path token by token, except where the CPU's two candidates were a
    near-tie: fp32 matrix products on the GPU sum in another order (differences ~1e-6 of a logit), and on a
    random-weight model the top two logits can be that close; there either branch is right. Then the eval
    command itself runs on the GPU and records its device."""
    from medtrain.core.templates import get_template
    from medtrain.eval.data import read_cmexam
    from medtrain.eval.generate import encode_prompts
    from medtrain.eval.model import load_model
    from medtrain.eval.run import run_task

    data = REPO / "data_prep" / "samples" / "cmexam_test.csv"
    tpl = get_template("cmexam_with_reasoning")
    questions = read_cmexam(data)[:8]
    cpu_model, tok, _ = load_model(hf_model, device="cpu", dtype="fp32")
    gpu_model, _, _ = load_model(hf_model, device="cuda", dtype="fp32")
    followed, ties = 0, 0
    for ids in encode_prompts(tok, [tpl.prompt(q.question, q.options) for q in questions]):
        paths = []
        for model in (cpu_model, gpu_model):
            x = torch.tensor([ids], device=model.device)
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=24,
                                 output_scores=True, return_dict_in_generate=True, pad_token_id=tok.eos_token_id)
            paths.append((out.sequences[0, len(ids):].tolist(), [s[0].float().cpu() for s in out.scores]))
        (cpu_ids, cpu_scores), (gpu_ids, _) = paths
        diverge = next((i for i, (a, b) in enumerate(zip(cpu_ids, gpu_ids, strict=False)) if a != b), None)
        if diverge is None:
            assert cpu_ids == gpu_ids
            followed += 1
            continue
        margin = (cpu_scores[diverge][cpu_ids[diverge]] - cpu_scores[diverge][gpu_ids[diverge]]).item()
        assert abs(margin) < NEAR_TIE, f"the GPU left the CPU's path at step {diverge} with margin {margin}"
        ties += 1
    assert followed >= len(questions) // 2, f"only {followed} of {len(questions)} questions decoded alike"
    print(f"FIGURE greedy on CUDA: {followed} of {len(questions)} identical, {ties} near-ties (< {NEAR_TIE})")
    result = run_task("cmexam", tmp_path / "gpu", data=data, model_dir=hf_model, limit=8, max_new_tokens=24,
                      dtype="fp32", device="cuda")
    assert result["config"]["device"].startswith("cuda") and result["metrics"]["n"] == 8


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
    assert len(scores[0]) == len(scores[1]) == gpu["metrics"]["n"] == cpu["metrics"]["n"] > 0
    for g, c in zip(*scores, strict=True):
        assert g == pytest.approx(c, abs=1e-3)  # fp32 on both; CUDA's reduction order moves scores by ~1e-6
        best = sorted(c, reverse=True)
        if best[0] - best[1] >= NEAR_TIE:  # the same letter unless the CPU's two best were a near-tie
            assert g.index(max(g)) == c.index(max(c))
    half = run_mc("mmlu", hf_model, data, tmp_path / "bf16", device="cuda", dtype="auto", **kw)
    assert half["config"]["device"].endswith(("bf16", "fp16")) and half["metrics"]["n"] == cpu["metrics"]["n"]


def test_preflight_all_reduces_over_nccl(tiny, hosts, tmp_path):
    r = cli("launch", "--hosts", hosts, "--launcher", "local", "--recipe", CONT_RECIPE, "--check",
            "--set", f"data={tiny['huatuo']}", "--set", f"tokenizer={tiny['tok']}",
            "--set", f"output_dir={tmp_path / 'run'}", "--set", "global_batch=2", "--set", "micro_batch=2",
            "--timeout", "120", env={**os.environ, "NCCL_DEBUG": "WARN"})
    assert r.returncode == 0 and "PREFLIGHT OK" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
