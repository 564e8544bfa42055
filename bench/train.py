"""Training throughput: medtrain's loop against the Hugging Face Trainer with the same DeepSpeed JSON, model,
data and ranks, in one run (target ratio >= 1.0), and the share of step time medtrain waits on data (< 1%).

    python bench/train.py [--steps 30] [--seq-len 256] [--model tiny-wide]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import save  # noqa: E402


def cli(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "medtrain", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"medtrain {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def steady_rate(ends: list[float], start: float, skip: int, tokens_per_step: int) -> float:
    """Tokens/s over the steps after the first `skip` (start-up and first gathers excluded, as for medtrain)."""
    ends = [start, *ends]
    return tokens_per_step * (len(ends) - 1 - skip) / (ends[-1] - ends[skip])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--model", default="tiny-wide")
    ap.add_argument("--log-every", type=int, default=5, help="medtrain log cadence; the window starts at the "
                    "first log step on both sides")
    args = ap.parse_args()
    samples = REPO / "data_prep" / "samples"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cli("tokenizer", "--input", str(samples / "huatuo_sample.jsonl"), "--out", str(tmp / "tok"),
            "--vocab-size", "1000")
        cli("init-model", "--config", args.model, "--tokenizer", str(tmp / "tok"), "--out", str(tmp / "base"))
        cli("prep", "huatuo", "--input", str(samples / "huatuo_sample.jsonl"), "--tokenizer", str(tmp / "tok"),
            "--out", str(tmp / "data"), "--seq-len", str(args.seq_len))
        # the corpus is small: repeat it through epochs so both sides run the same number of full steps
        sets = [f"model={tmp / 'base'}", f"tokenizer={tmp / 'tok'}", f"data={tmp / 'data'}",
                f"output_dir={tmp / 'ours'}", f"seq_len={args.seq_len}", f"max_steps={args.steps}", "epochs=100",
                "checkpoint_every=0", f"log_every={args.log_every}", "global_batch=8", "micro_batch=2"]
        cli("launch", "--hosts", str(REPO / "hostfiles/localhost"), "--launcher", "local",
            "--recipe", str(REPO / "recipes/tiny/continual.yaml"), *[x for s in sets for x in ("--set", s)])
        records = [json.loads(x) for x in (tmp / "ours" / "metrics.jsonl").read_text().splitlines()]
        tokens_per_step = 8 * args.seq_len
        # wall clock between the first and the last log record (logging included), the same window as HF's
        first, last = records[0], records[-1]
        ours_rate = tokens_per_step * (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])
        data_wait = sum(r["data_wait_frac"] * tokens_per_step / r["tokens_per_s"] for r in records) / sum(
            tokens_per_step / r["tokens_per_s"] for r in records)
        hf_args = {"ds_config": str(tmp / "ours" / "ds_config.json"), "model": str(tmp / "base"),
                   "data": str(tmp / "data"), "seq_len": args.seq_len, "steps": args.steps, "micro_batch": 2,
                   "accumulation": 2, "lr": 3e-3, "out": str(tmp / "hf")}
        proc = subprocess.run([str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2",
                               "--no_local_rank", str(REPO / "bench" / "hf_trainer_rank.py"), json.dumps(hf_args)],
                              cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"HF Trainer run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        hf = json.loads((tmp / "hf" / "hf_times.json").read_text())
        hf_rate = steady_rate(hf["step_ends"], hf["start"], first["step"], tokens_per_step)
    result = {"model": args.model, "seq_len": args.seq_len, "steps": args.steps, "ranks": 2, "global_batch": 8,
              "medtrain_tokens_per_s": ours_rate, "hf_trainer_tokens_per_s": hf_rate,
              "ratio": ours_rate / hf_rate, "medtrain_data_wait_share": data_wait}
    print(f"medtrain {ours_rate:,.0f} tok/s vs HF Trainer {hf_rate:,.0f} tok/s = {result['ratio']:.2f}x "
          f"(target >= 1.0); data wait {100 * data_wait:.2f}% of step time (target < 1%)")
    save("train", result)


if __name__ == "__main__":
    main()
