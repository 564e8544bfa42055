"""The Hugging Face Trainer on the same DeepSpeed JSON, model, data and sample order as a finished medtrain run
(bench/train.py and tests/system/test_hf_trainer_parity.py run this under `deepspeed --num_gpus N`). Rank 0
writes hf_run.json: per-step end times and the losses and gradient norms the Trainer logged.

Same settings: steps, lr, schedule, optimizer, weight decay and gradient checkpointing come from the run's
recipe.yaml and run_spec.json, and medtrain's optimizer groups are the Trainer's (medtrain.train.trainer.param_groups).
Two differences remain, both outside what a loss-curve comparison should run into: during warmup the Trainer
trains step i at i / warmup of the peak where medtrain trains it at (i + 1) / warmup, and a `max_steps` that
cuts a schedule short is the Trainer's whole schedule; compare runs without warmup, over a whole schedule.

Same order: the Trainer gets medtrain's global order (medtrain.train.batches.StepPlan, read from the run's
run_spec.json) through a sequential sampler, and accelerate hands out batch k to rank k % world — which is
medtrain's layout (micro-batch m of rank r is slot m * world + r of the step), so every rank sees the same rows
at the same micro-step on both sides, ghost slots included. Rows are collated by medtrain.train.batches.collate."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def medtrain_run(run_dir: Path) -> dict:
    """What the Trainer needs from a medtrain run: its recipe, run spec, samples, pad id and the global sample ids
    of every step in medtrain's order."""
    from medtrain.core.recipe import load_recipe
    from medtrain.core.run_spec import RunSpec
    from medtrain.data_prep.reader import open_samples
    from medtrain.train.batches import StepPlan

    recipe = load_recipe(run_dir / "recipe.yaml")
    spec = RunSpec.read(run_dir / "run_spec.json")
    plan = StepPlan.of(spec)
    samples = open_samples(recipe.data, recipe.stage, recipe.seq_len, recipe.packing)
    tok = samples.data.manifest["tokenizer"]
    pad = tok["eos_id"] if tok.get("pad_id") is None else tok["pad_id"]
    order = [int(i) for s in range(spec.total_steps) for i in plan.step_ids(s)]
    return {"recipe": recipe, "spec": spec, "samples": samples, "pad": pad, "order": order}


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import deepspeed
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from medtrain.train.batches import collate

    deepspeed.init_distributed()  # before TrainingArguments, so zero.Init sees the real world size
    args = json.loads(sys.argv[1])
    run_dir = Path(args["run_dir"])
    ds_config = json.loads((run_dir / "ds_config.json").read_text())
    # The Trainer refuses a DeepSpeed JSON that disagrees with its own arguments (transformers >= 4.4x checks
    # precision and the scheduler's step counts); medtrain writes no scheduler block, and the Trainer's
    # precision follows the JSON's.
    ds_config.pop("scheduler", None)
    bf16 = ds_config.get("bf16", {}).get("enabled", False)
    fp16 = ds_config.get("fp16", {}).get("enabled", False)
    run = medtrain_run(run_dir)
    recipe, spec, samples, pad = run["recipe"], run["spec"], run["samples"], run["pad"]
    times: list[float] = []
    logged: list[dict] = []

    class Record(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

        def on_log(self, targs, state, control, logs=None, **k):
            if logs and "loss" in logs:
                logged.append({"step": state.global_step, "loss": logs["loss"], "grad_norm": logs.get("grad_norm"),
                               "lr": logs.get("learning_rate")})

    class InMedtrainOrder(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    targs = TrainingArguments(
        output_dir=str(Path(args["out"])), per_device_train_batch_size=ds_config["train_micro_batch_size_per_gpu"],
        gradient_accumulation_steps=ds_config["gradient_accumulation_steps"], max_steps=spec.total_steps,
        learning_rate=recipe.lr, lr_scheduler_type=recipe.lr_schedule, warmup_steps=spec.warmup,
        weight_decay=recipe.weight_decay, optim=recipe.optimizer if recipe.optimizer == "adafactor" else "adamw_torch",
        gradient_checkpointing=recipe.gradient_checkpointing, logging_steps=args.get("log_every", 10 ** 6),
        save_strategy="no", report_to=[], deepspeed=ds_config, dataloader_num_workers=0, seed=42, bf16=bf16,
        fp16=fp16, remove_unused_columns=False,
        max_grad_norm=ds_config.get("gradient_clipping", 1.0), average_tokens_across_devices=True,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    trainer = InMedtrainOrder(model=model, args=targs, train_dataset=run["order"],
                              data_collator=lambda ids: collate(samples, np.asarray(ids), pad), callbacks=[Record()])
    start = time.perf_counter()
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args["out"], "hf_run.json").write_text(json.dumps({"start": start, "step_ends": times,
                                                                "logged": logged}))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
