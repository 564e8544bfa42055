"""The Hugging Face Trainer on the same DeepSpeed JSON, model and packed data as medtrain (bench/train.py runs
this under `deepspeed --num_gpus N`). Writes per-step end times for rank 0."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Packed(torch.utils.data.Dataset):
    def __init__(self, path: str, seq_len: int):
        from medtrain.data_prep.reader import open_samples

        self.samples = open_samples(path, "continual", seq_len, "packed")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        ids = torch.as_tensor(self.samples[i].input_ids)
        return {"input_ids": ids, "labels": ids.clone()}


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import deepspeed
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    deepspeed.init_distributed()  # before TrainingArguments, so zero.Init sees the real world size
    args = json.loads(sys.argv[1])
    ds_config = json.loads(Path(args["ds_config"]).read_text())
    # The Trainer refuses a DeepSpeed JSON that disagrees with its own arguments (transformers >= 4.4x checks
    # precision and the scheduler's step counts). medtrain runs its own schedule, so the JSON's scheduler block
    # is not what either side runs: drop it, and let the Trainer's precision follow the JSON's.
    ds_config.pop("scheduler", None)
    bf16 = ds_config.get("bf16", {}).get("enabled", False)
    fp16 = ds_config.get("fp16", {}).get("enabled", False)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    targs = TrainingArguments(
        output_dir=args["out"], per_device_train_batch_size=args["micro_batch"],
        gradient_accumulation_steps=args["accumulation"], max_steps=args["steps"], learning_rate=args["lr"],
        optim="adafactor", gradient_checkpointing=True, logging_steps=10 ** 6,
        save_strategy="no", report_to=[], deepspeed=ds_config, dataloader_num_workers=0, seed=42, bf16=bf16,
        fp16=fp16, max_grad_norm=ds_config.get("gradient_clipping", 1.0),
        use_cpu=not torch.cuda.is_available(),
    )
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    trainer = Trainer(model=model, args=targs, train_dataset=Packed(args["data"], args["seq_len"]),
                      callbacks=[Clock()])
    start = time.perf_counter()
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args["out"], "hf_times.json").write_text(json.dumps({"start": start, "step_ends": times}))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
