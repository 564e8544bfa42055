"""Eval speed: batched generation against a one-question-at-a-time generate loop (target >= 4x at batch 16),
and `--scoring harness` against lm-evaluation-harness 0.4.13 on the same model and files — the real MMLU and
CMMLU medical subjects with the real Llama-2 tokenizer when ../shared/data is beside the checkout (target: faster,
the same choice on every question, log-likelihoods within 1e-4).

    python bench/eval.py [--questions 48] [--max-new-tokens 32]
    python bench/eval.py --model llama-1b --tokenizer .gpu/tokenizers/llama2 --questions 128 \
        --max-new-tokens 256 --batch-size auto --baseline-questions 4 --generation-only --name gpu_eval   # GPU kit
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save, stop  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "data_prep" / "samples"


def tiny_model(root: Path, shape: str = "tiny-wide", tokenizer: Path | None = None) -> Path:
    """A real Hugging Face Llama (random weights) with the given tokenizer or one trained on the samples."""
    from medtrain.data_prep.tokenizer import train_bpe_tokenizer
    from medtrain.train.model_dir import init_model_dir

    tok = tokenizer or train_bpe_tokenizer([p.read_text() for p in SAMPLES.rglob("*.csv")], root / "tok",
                                           vocab_size=1000)
    return init_model_dir(shape, tok, root / "model", seed=0)


def bench_generation(model_dir: Path, n: int, max_new: int, batch: int | str, baseline: int | None = None) -> dict:
    """Batched generation against one question at a time (on the first `baseline` questions when given: a
    1B model generating 256 tokens per question one by one would take most of a GPU slot)."""
    import torch

    from medtrain.core.templates import get_template
    from medtrain.eval.data import read_cmexam
    from medtrain.eval.generate import encode_prompts, generate
    from medtrain.eval.model import auto_batch_size, generation_row_bytes, load_model

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok, placement = load_model(model_dir)
    tpl = get_template("cmexam_with_reasoning")
    sample = read_cmexam(SAMPLES / "cmexam_test.csv")
    qs = (sample * (n // len(sample) + 1))[:n]  # the sample repeated up to n questions
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


MEDICAL = ["anatomy", "clinical_knowledge", "college_medicine"]


def _compare(task: str, preds: list[dict], res: dict, names: list[str]) -> tuple[float, int]:
    """Largest log-likelihood difference and number of different choices, question by question."""
    worst, differ = 0.0, 0
    for name in names:
        mine = [p for p in preds if p["subject"] == name.removeprefix(f"medtrain_{task}_")]
        for p, ref in zip(mine, sorted(res["samples"][name], key=lambda x: x["doc_id"]), strict=True):
            ll = [r[0][0] for r in ref["resps"]]
            worst = max(worst, *(abs(a - b) for a, b in zip(p["scores"], ll, strict=True)))
            differ += p["extracted"] != "ABCD"[max(range(4), key=lambda k: ll[k])]
    return worst, differ


def bench_mc(task: str, model_dir: Path, root: Path, data: Path, subjects: list[str] | None,
             limit: int | None) -> dict:
    """`--scoring harness` at batch 1 and the CPU default against lm-evaluation-harness 0.4.13 (its default
    batch 1) on the same model and files: wall time of each whole call (model load included), and the
    differences question by question."""
    import importlib.util

    from medtrain.eval.harness_tasks import run_lm_eval, write_harness_tasks
    from medtrain.eval.run import run_mc

    ours: dict = {}
    for batch in (1, 8):
        t = time.perf_counter()
        r = run_mc(task, model_dir, data, root / f"ours-{task}-{batch}", scoring="harness", batch_size=batch,
                   limit=limit, subjects=subjects)
        ours[batch] = {"s": time.perf_counter() - t, "acc": r["metrics"]["acc_micro"]}
    out = {"task": task, "data": str(data), "subjects": subjects or "all", "limit": limit,
           "questions": r["metrics"]["n"], "bos": r["config"]["bos"], "medtrain_s_batch1": ours[1]["s"],
           "medtrain_s_batch8": ours[8]["s"],
           "medtrain_acc": ours[8]["acc"]}
    if importlib.util.find_spec("lm_eval") is None:
        return {**out, "lm_eval": "not installed"}
    names = write_harness_tasks(task, data, root / f"tasks-{task}", subjects)
    t = time.perf_counter()
    res = run_lm_eval(model_dir, root / f"tasks-{task}", names, batch_size=1, limit=limit, log_samples=True)
    ref_s = time.perf_counter() - t
    preds = [json.loads(x) for x in (root / f"ours-{task}-8" / "predictions.jsonl").read_text().splitlines()]
    worst, differ = _compare(task, preds, res, names)
    per_subject = {n: sum(p["subject"] == n.removeprefix(f"medtrain_{task}_") for p in preds) for n in names}
    ref_acc = 100 * sum(res["results"][n]["acc,none"] * k for n, k in per_subject.items()) / len(preds)
    return {**out, "lm_eval_s": ref_s, "speedup": ref_s / ours[8]["s"], "speedup_batch1": ref_s / ours[1]["s"],
            "max_abs_loglik_diff": worst, "choices_differ": differ, "lm_eval_acc": ref_acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", default="16", help="a number, or auto (sized to the free GPU memory)")
    ap.add_argument("--model", default="tiny-wide", help="named shape of the random-weight model")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: a BPE trained on the samples)")
    ap.add_argument("--baseline-questions", type=int, help="time one-at-a-time on only this many questions")
    ap.add_argument("--generation-only", action="store_true")
    ap.add_argument("--mc-limit", type=int, default=25, help="questions per subject of the real MMLU/CMMLU files")
    ap.add_argument("--name", default="eval", help="results file: bench/results/NAME.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, stop)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    mc: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp), args.model, args.tokenizer)
        gen = bench_generation(model, args.questions, args.max_new_tokens, batch, args.baseline_questions)
        print(f"generation ({gen['device']}): batched {gen['batched_q_per_s']:.2f} q/s vs one-at-a-time "
              f"{gen['one_at_a_time_q_per_s']:.2f} q/s = {gen['speedup']:.1f}x (target >= 4x at batch "
              f"{gen['batch_size']}); identical outputs {gen['identical_outputs']}/{gen['one_at_a_time_questions']}")
        if args.generation_only:
            save(args.name, {"generation": gen})
            return
        mc_model, mc_tok = model, "BPE trained on the samples"
        if (SHARED / "tokenizers" / "llama2").is_dir():
            mc_tok = "Llama-2 (../shared/data/tokenizers/llama2)"
            llama2 = SHARED / "tokenizers" / "llama2" / "derived_hf_fast"
            mc_model = tiny_model(Path(tmp) / "llama2", args.model, llama2)
        for task in ("mmlu", "cmmlu"):
            real = (SHARED / task).is_dir()
            r = bench_mc(task, mc_model, Path(tmp), SHARED / task if real else SAMPLES / task,
                         MEDICAL if real else None, args.mc_limit if real else None)
            mc[task] = {**r, "files": "real" if real else "shipped samples", "tokenizer": mc_tok}
            if "lm_eval_s" in r:
                print(f"{task.upper()} 5-shot harness scoring, {r['questions']} q of {mc[task]['files']} "
                      f"({mc_tok}, BOS {r['bos']}): medtrain {r['medtrain_s_batch8']:.1f} s (batch 1: "
                      f"{r['medtrain_s_batch1']:.1f} s) vs lm-eval {r['lm_eval_s']:.1f} s = {r['speedup']:.1f}x; "
                      f"max |loglik diff| {r['max_abs_loglik_diff']:.1e}, choices differing {r['choices_differ']}; "
                      f"acc {r['medtrain_acc']:.2f} vs {r['lm_eval_acc']:.2f}")
    save(args.name, {"generation": gen, "multiple_choice": mc})
    speedups = {f"{t}_speedup": r.get("speedup") for t, r in mc.items()}
    print(json.dumps({"generation_speedup": gen["speedup"], **speedups}))


if __name__ == "__main__":
    main()
