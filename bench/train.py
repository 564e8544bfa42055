"""Training throughput: medtrain's loop against the Hugging Face Trainer with the same DeepSpeed JSON, model,
data and ranks, in one run (target ratio >= 1.0), the share of step time medtrain waits on data (< 1%), and —
on a GPU — TFLOP/s, MFU, HFU and peak memory beside what `medtrain plan` predicts for the same recipe.

    python bench/train.py [--steps 30] [--seq-len 256] [--model tiny-wide]                      # the CPU figures
    python bench/train.py --model llama-1b --seq-len 2048 --ranks 1 --preset h100-zero3-bf16 \\
        --precision bf16 --micro-batch 4 --global-batch 8 --steps 20 --tokenizer .gpu/tokenizers/llama2 \\
        --synthetic --name gpu_train                                                             # bench/gpu/check.sh
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import save, stop  # noqa: E402


def run(cmd: list[str], what: str) -> None:
    """Run a child with its output streamed to ours (the kit's log shows every line it printed); a SIGTERM to us
    (`timeout`, the device's limit) is passed on to it and waited for, so its ranks end and our temporary
    directories (a 1B model and its export are GBs) are removed on the way out."""
    proc = subprocess.Popen(cmd, cwd=REPO)
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise SystemExit(f"{what}: stopped by SIGTERM")

    signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise RuntimeError(f"{what} failed (exit {code}); its output is above")


def cli(*args: str) -> None:
    run([sys.executable, "-m", "medtrain", *args], f"medtrain {args[0]}")


def steady_rate(ends: list[float], start: float, skip: int, tokens_per_step: int) -> float:
    """Tokens/s over the steps after the first `skip` (start-up and first gathers excluded, as for medtrain)."""
    ends = [start, *ends]
    return tokens_per_step * (len(ends) - 1 - skip) / (ends[-1] - ends[skip])


def synthetic_dataset(tokenizer: Path, out: Path, tokens: int) -> None:
    """Random ids in the real on-disk format: throughput does not depend on what the tokens say, and the
    shipped samples are too small to fill many 2048-token blocks."""
    from medtrain.data_prep.format import DatasetWriter
    from medtrain.data_prep.tokenizer import Encoder

    info = Encoder(tokenizer).info
    rng = np.random.default_rng(0)
    writer = DatasetWriter(out, info.vocab_size, sft=False)
    doc = 4096
    for _ in range(max(1, tokens // doc)):
        writer.add(rng.integers(3, info.vocab_size, doc))
    manifest = {"kind": "continual", "source_type": "synthetic",
                "tokenizer": {k: v for k, v in info.to_manifest().items() if k != "backend"},
                "sources": [], "template": None, "stats": {}}
    writer.finalize(manifest, overwrite=True)


def plan_gib(run: Path, ranks: int) -> float | None:
    """What `medtrain plan` predicts per GPU for the run's recipe, without its fixed runtime reserve (CUDA
    context and comm buffers are outside torch.cuda.max_memory_allocated)."""
    import torch

    from medtrain.core.recipe import load_recipe
    from medtrain.launch.plan import Hardware, make_plan

    if not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    plan = make_plan(load_recipe(run / "recipe.yaml"), {"localhost": ranks}, Hardware(gpu_mem_gb=total))
    return sum(v for k, v in plan.memory.items() if not k.startswith("runtime reserve")) / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--model", default="tiny-wide")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--preset", default="cpu-zero3")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--tokenizer", type=Path, help="use this tokenizer (default: a small BPE trained here)")
    ap.add_argument("--synthetic", action="store_true", help="random-id dataset of steps x batch x seq tokens")
    ap.add_argument("--name", default="train", help="results file: bench/results/NAME.json")
    ap.add_argument("--log-every", type=int, default=5, help="medtrain log cadence; the window starts at the "
                    "first log step on both sides")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, stop)
    samples = REPO / "data_prep" / "samples"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = args.tokenizer
        if tok is None:
            tok = tmp / "tok"
            cli("tokenizer", "--input", str(samples / "huatuo_sample.jsonl"), "--out", str(tok), "--vocab-size",
                "1000")
        cli("init-model", "--config", args.model, "--tokenizer", str(tok), "--out", str(tmp / "base"))
        if args.synthetic:
            synthetic_dataset(tok, tmp / "data", (args.steps + 2) * args.global_batch * args.seq_len)
        else:
            cli("prep", "huatuo", "--input", str(samples / "huatuo_sample.jsonl"), "--tokenizer", str(tok),
                "--out", str(tmp / "data"), "--seq-len", str(args.seq_len))
        # the corpus is small: repeat it through epochs so both sides run the same number of full steps
        sets = [f"model={tmp / 'base'}", "init=pretrained", f"tokenizer={tok}", f"data={tmp / 'data'}",
                f"output_dir={tmp / 'ours'}", f"seq_len={args.seq_len}", f"max_steps={args.steps}", "epochs=100",
                "checkpoint_every=0", f"log_every={args.log_every}", f"global_batch={args.global_batch}",
                f"micro_batch={args.micro_batch}", f"preset={args.preset}", f"precision={args.precision}"]
        hosts = tmp / "hosts"
        hosts.write_text(f"localhost slots={args.ranks}\n")
        cli("launch", "--hosts", str(hosts), "--launcher", "local",
            "--recipe", str(REPO / "recipes/tiny/continual.yaml"), *[x for s in sets for x in ("--set", s)])
        records = [json.loads(x) for x in (tmp / "ours" / "metrics.jsonl").read_text().splitlines()]
        tokens_per_step = args.global_batch * args.seq_len
        # wall clock between the first and the last log record (logging included), the same window as HF's
        first, last = records[0], records[-1]
        ours_rate = tokens_per_step * (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])
        data_wait = sum(r["data_wait_frac"] * tokens_per_step / r["tokens_per_s"] for r in records) / sum(
            tokens_per_step / r["tokens_per_s"] for r in records)
        steady = records[1:] or records
        utilisation = {k: float(np.median([r[k] for r in steady])) for k in ("tflops_per_gpu", "mfu", "hfu")
                       if k in last}
        predicted = plan_gib(tmp / "ours", args.ranks)
        result = {"model": args.model, "seq_len": args.seq_len, "steps": args.steps, "ranks": args.ranks,
                  "global_batch": args.global_batch, "micro_batch": args.micro_batch, "preset": args.preset,
                  "precision": args.precision, "medtrain_tokens_per_s": ours_rate,
                  "medtrain_data_wait_share": data_wait, **utilisation}
        if "max_mem_gib" in last:
            result.update({"peak_mem_gib": last["max_mem_gib"], "plan_mem_gib": predicted,
                           "peak_vs_plan": last["max_mem_gib"] / predicted if predicted else None})
        save(args.name, result)  # medtrain's figures are kept even if the HF half fails or runs out of time
        hf_args = {"run_dir": str(tmp / "ours"), "model": str(tmp / "base"), "out": str(tmp / "hf")}
        deepspeed = Path(sys.executable).parent / "deepspeed"
        launcher = [str(deepspeed)] if deepspeed.exists() else [sys.executable, "-m", "deepspeed.launcher.runner"]
        try:
            run([*launcher, "--num_gpus", str(args.ranks), "--no_local_rank",
                 str(REPO / "bench" / "hf_trainer_rank.py"), json.dumps(hf_args)], "HF Trainer run")
        except RuntimeError as err:
            save(args.name, {**result, "hf_trainer_error": str(err)})
            raise SystemExit(str(err)) from None
        hf = json.loads((tmp / "hf" / "hf_run.json").read_text())
        hf_rate = steady_rate(hf["step_ends"], hf["start"], first["step"], tokens_per_step)
    result.update({"hf_trainer_tokens_per_s": hf_rate, "ratio": ours_rate / hf_rate})
    line = (f"medtrain {ours_rate:,.0f} tok/s vs HF Trainer {hf_rate:,.0f} tok/s = {result['ratio']:.2f}x "
            f"(target >= 1.0); data wait {100 * data_wait:.2f}% of step time (target < 1%)")
    if "mfu" in utilisation:
        line += (f"; {utilisation['tflops_per_gpu']:.1f} TFLOP/s/GPU, MFU {100 * utilisation['mfu']:.1f}%, "
                 f"HFU {100 * utilisation['hfu']:.1f}%")
    if result.get("peak_vs_plan"):
        line += f"; peak {result['peak_mem_gib']:.1f} GiB vs plan {predicted:.1f} GiB ({result['peak_vs_plan']:.2f}x)"
    print(line)
    save(args.name, result)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as err:  # a child failed: one line after its own output, not a traceback of ours
        raise SystemExit(str(err)) from None
