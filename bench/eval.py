"""Eval speed: batched generation against a one-question-at-a-time generate loop (target >= 4x at batch 16),
and the MMLU scorer against lm-evaluation-harness on the same model and files (target: faster, same accuracy).

    python bench/eval.py [--questions 48] [--max-new-tokens 32]
    python bench/eval.py --model llama-1b --tokenizer .gpu/tokenizers/llama2 --questions 128 \
        --max-new-tokens 256 --batch-size auto --baseline-questions 4 --generation-only --name gpu_eval   # GPU kit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "data_prep" / "samples"


def tiny_model(root: Path, shape: str = "tiny-wide", tokenizer: Path | None = None) -> Path:
    """A real Hugging Face Llama (random weights) with the given tokenizer or one trained on the samples."""
    from data_prep.tokenizer import train_bpe_tokenizer
    from medtrain.model_dir import init_model_dir

    tok = tokenizer or train_bpe_tokenizer([p.read_text() for p in SAMPLES.rglob("*.csv")], root / "tok",
                                           vocab_size=1000)
    return init_model_dir(shape, tok, root / "model", seed=0)


def bench_generation(model_dir: Path, n: int, max_new: int, batch: int | str, baseline: int | None = None) -> dict:
    """Batched generation against one question at a time (on the first `baseline` questions when given: a
    1B model generating 256 tokens per question one by one would take most of a GPU slot)."""
    import torch

    from data_prep.templates import get_template
    from eval.data import read_cmexam
    from eval.generate import encode_prompts, generate
    from eval.model import auto_batch_size, generation_row_bytes, load_model

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok, placement = load_model(model_dir)
    tpl = get_template("cmexam_with_reasoning")
    qs = (read_cmexam(SAMPLES / "cmexam_test.csv") * (n // 200 + 1))[:n]
    prompts = [tpl.prompt(q.question, q.options) for q in qs]
    if batch == "auto":
        longest = max(len(x) for x in encode_prompts(tok, prompts))
        batch, _ = auto_batch_size(model, generation_row_bytes(model, longest, max_new), len(prompts), 16)
    k = min(baseline or n, n)
    t = time.perf_counter()
    one = [generate(model, tok, [p], batch_size=1, max_new_tokens=max_new, progress=False)[0] for p in prompts[:k]]
    single_s = time.perf_counter() - t
    t = time.perf_counter()
    many = generate(model, tok, prompts, batch_size=batch, max_new_tokens=max_new, progress=False)
    batched_s = time.perf_counter() - t
    same = sum(a == b for a, b in zip(one, many[:k], strict=True))
    return {"questions": n, "max_new_tokens": max_new, "batch_size": batch, "device": placement.describe(),
            "one_at_a_time_questions": k, "one_at_a_time_q_per_s": k / single_s, "batched_q_per_s": n / batched_s,
            "speedup": (single_s / k) / (batched_s / n), "identical_outputs": same}


def bench_mmlu(model_dir: Path, root: Path) -> dict:
    import importlib.util

    from eval.harness_tasks import run_lm_eval, write_harness_tasks
    from eval.run import run_mc

    t = time.perf_counter()
    ours = run_mc("mmlu", model_dir, SAMPLES / "mmlu", root / "ours", scoring="harness", batch_size=8)
    ours_s = time.perf_counter() - t
    if importlib.util.find_spec("lm_eval") is None:
        return {"medtrain_s": ours_s, "medtrain_acc": ours["metrics"]["acc"], "lm_eval": "not installed"}
    names = write_harness_tasks("mmlu", SAMPLES / "mmlu", root / "tasks")
    t = time.perf_counter()
    res = run_lm_eval(model_dir, root / "tasks", names, batch_size=8)
    ref_s = time.perf_counter() - t
    n = sum(v["n"] for v in ours["metrics"]["by_subject"].values())
    ref_correct = sum(res["results"][name]["acc,none"] * ours["metrics"]["by_subject"][
        name.removeprefix("medtrain_mmlu_")]["n"] for name in names)
    return {"questions": n, "medtrain_s": ours_s, "lm_eval_s": ref_s, "speedup": ref_s / ours_s,
            "medtrain_acc": ours["metrics"]["acc_micro"], "lm_eval_acc": 100 * ref_correct / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", default="16", help="a number, or auto (sized to the free GPU memory)")
    ap.add_argument("--model", default="tiny-wide", help="named shape of the random-weight model")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: a BPE trained on the samples)")
    ap.add_argument("--baseline-questions", type=int, help="time one-at-a-time on only this many questions")
    ap.add_argument("--generation-only", action="store_true")
    ap.add_argument("--name", default="eval", help="results file: bench/results/NAME.json")
    args = ap.parse_args()
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    mmlu: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp), args.model, args.tokenizer)
        gen = bench_generation(model, args.questions, args.max_new_tokens, batch, args.baseline_questions)
        print(f"generation ({gen['device']}): batched {gen['batched_q_per_s']:.2f} q/s vs one-at-a-time "
              f"{gen['one_at_a_time_q_per_s']:.2f} q/s = {gen['speedup']:.1f}x (target >= 4x at batch "
              f"{gen['batch_size']}); identical outputs {gen['identical_outputs']}/{gen['one_at_a_time_questions']}")
        if args.generation_only:
            save(args.name, {"generation": gen})
            return
        mmlu = bench_mmlu(model, Path(tmp))
        if "lm_eval_s" in mmlu:
            print(f"MMLU 5-shot ({mmlu['questions']} q): medtrain {mmlu['medtrain_s']:.1f} s vs lm-eval "
                  f"{mmlu['lm_eval_s']:.1f} s = {mmlu['speedup']:.1f}x; acc {mmlu['medtrain_acc']:.2f} vs "
                  f"{mmlu['lm_eval_acc']:.2f}")
    save(args.name, {"generation": gen, "mmlu": mmlu})
    print(json.dumps({"generation_speedup": gen["speedup"], "mmlu_speedup": mmlu.get("speedup")}))


if __name__ == "__main__":
    main()
