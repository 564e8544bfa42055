"""medtrain's training loss curve equals the Hugging Face Trainer's (transformers >= 4.46, whose loss is
token-weighted over the global batch through `num_items_in_batch`) on the same model, data, sample order, DeepSpeed
JSON and two ZeRO-3 ranks: SFT micro-batches with very unequal labelled-token counts, a whole linear schedule, the
epoch's last step topped up with ghost slots. Step by step, the loss and the gradient norm agree to fp32
reduction noise, and the same batches under medtrain's other reduction (`micro_batch`, the paper's Trainer before
4.46) differ by far more, so the match is a real check."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from train_fixtures import REPO, SFT_RECIPE, check, cli, launch_args

HF_RANK = REPO / "bench" / "hf_trainer_rank.py"
REL = 2e-6  # measured 8e-8: the same fp32 sums, scaled in a different order on each side


def _step_zero_losses(run: Path, model: Path) -> tuple[float, float]:
    """Step 0 of the run, computed here in one process: (token-weighted loss, mean of micro-batch means)."""
    sys.path.insert(0, str(REPO / "bench"))
    from hf_trainer_rank import medtrain_run
    from transformers import AutoModelForCausalLM

    from medtrain.train.batches import StepPlan, collate
    from medtrain.train.loss import labelled, token_loss_sum

    got = medtrain_run(run)
    plan = StepPlan.of(got["spec"])
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    sums, counts = [], []
    with torch.no_grad():
        for rank in range(plan.world_size):
            for ids in plan.micro_ids(0, rank):
                batch = collate(got["samples"], ids, got["pad"])
                sums.append(token_loss_sum(lm(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits,
                                           batch["labels"]).item())
                counts.append(labelled(batch["labels"]))
    return sum(sums) / sum(counts), float(np.mean([s / c for s, c in zip(sums, counts, strict=True)]))


def test_the_loss_curve_equals_the_hf_trainers_on_the_same_batches(tiny, tmp_path):
    base = tmp_path / "base"
    check(cli("init-model", "--config", "tiny", "--tokenizer", str(tiny["tok"]), "--out", str(base)))
    run = tmp_path / "medtrain"
    check(cli(*launch_args(SFT_RECIPE, tiny, run, "--set", f"model={base}", "--set", "init=pretrained",
                           "--set", f"data={tiny['cmexam']}", "--set", "val_data=null", "--set", "epochs=1",
                           "--set", "max_steps=0", "--set", "warmup_ratio=0", "--set", "lr_schedule=linear",
                           "--set", "lr=2e-3", "--set", "loss_reduction=token", "--set", "log_every=1",
                           "--set", "gradient_checkpointing=false")))
    ours = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]

    hf_out = tmp_path / "hf"
    hf_args = {"run_dir": str(run), "model": str(base), "out": str(hf_out), "log_every": 1}
    proc = subprocess.run([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--no_local_rank",
                           str(HF_RANK), json.dumps(hf_args)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    theirs = json.loads((hf_out / "hf_run.json").read_text())["logged"]

    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == list(range(1, len(ours) + 1))
    spec = json.loads((run / "run_spec.json").read_text())
    assert spec["data"]["samples"] % spec["global_batch"], "the last step should carry ghost slots"
    loss_rel = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(ours, theirs, strict=True))
    norm_rel = max(abs(a["grad_norm"] - b["grad_norm"]) / b["grad_norm"] for a, b in zip(ours, theirs, strict=True))
    token, per_micro = _step_zero_losses(run, base)
    print(f"FIGURE {len(ours)} steps, 2 ZeRO-3 ranks: max relative |medtrain - HF Trainer| loss {loss_rel:.1e}, "
          f"grad norm {norm_rel:.1e}; losses {ours[0]['loss']:.4f} -> {ours[-1]['loss']:.4f} (HF "
          f"{theirs[0]['loss']:.4f} -> {theirs[-1]['loss']:.4f}); step 0 token-weighted {token:.5f} vs mean of "
          f"micro-batch means {per_micro:.5f}")
    assert abs(ours[0]["loss"] - token) <= 1e-5 * token
    assert abs(token - per_micro) > 20 * REL * token, "these batches must tell the two reductions apart"
    assert loss_rel <= REL and norm_rel <= REL
    assert ours[-1]["loss"] < ours[0]["loss"] - 0.5, "the run should have learned something"
