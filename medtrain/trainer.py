"""The per-rank training loop on deepspeed.initialize: batch, forward, loss, backward, step, log, checkpoint.

`medtrain train continual|sft --recipe R` is what `medtrain launch` starts on every rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from data_prep.reader import open_samples
from data_prep.tokenizer import tokenizer_sha256
from launch.plan import ds_config_for, make_plan
from medtrain import checkpoint
from medtrain.batches import IGNORE, StepPlan, collate
from medtrain.metrics import MetricsLogger
from medtrain.modeling import build_model, hf_config, release_hf_deepspeed_config, save_hf_config
from medtrain.recipe import Recipe, RecipeError, load_recipe


class TrainingError(RuntimeError):
    """The run went wrong in a way more steps will not fix (exit code 1)."""


class LossScaleWatch:
    """fp16 on V100 is where Llama-2 runs go wrong (its weights were trained in bf16): a loss scale that sits at
    its minimum while steps keep overflowing means the run is no longer learning. Stop instead of training on."""

    def __init__(self, min_scale: float, patience: int):
        self.min_scale, self.patience, self.streak = min_scale, patience, 0

    def update(self, scale: float, skipped_total: int) -> None:
        overflowed = skipped_total > getattr(self, "_last_skipped", 0)
        self._last_skipped = skipped_total
        self.streak = self.streak + 1 if scale <= self.min_scale and overflowed else 0
        if self.streak >= self.patience:
            raise TrainingError(
                f"fp16 loss scale has sat at its minimum ({self.min_scale:g}) for {self.streak} steps with "
                f"overflowing gradients ({skipped_total} steps skipped in all): the run is not learning. Llama-2 "
                "was trained in bf16; use precision bf16 where the hardware has it, or fp32, or a lower lr"
            )


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over labelled tokens; 0 (with a graph) when a micro-batch holds only ghosts."""
    # shift the labels, not the logits: slicing logits[:, :-1] would copy the largest tensor of the step
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE).reshape(-1)
    total = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), shift_labels, ignore_index=IGNORE,
                            reduction="sum")
    return total / (shift_labels != IGNORE).sum().clamp(min=1)


def warmup_decay(optimizer: torch.optim.Optimizer, params: dict) -> torch.optim.lr_scheduler.LambdaLR:
    """The DeepSpeed JSON's WarmupDecayLR, without its two steps at lr 0.

    DeepSpeed's WarmupLR trains step 1 at warmup_min_lr and step 2 at gamma 0 (and clamps warmup to >= 2 steps);
    here step i (0-based) of the warmup trains at (i + 1) / warmup of the peak, then decays linearly to 0.
    """
    total, warmup = params["total_num_steps"], params["warmup_num_steps"]
    lo, hi = params.get("warmup_min_lr", 0.0), params["warmup_max_lr"]

    def factor(i: int) -> float:
        f = (i + 1) / warmup if i < warmup else max(0.0, (total - i) / max(1, total - warmup))
        return (lo + (hi - lo) * min(f, 1.0)) / hi

    for group in optimizer.param_groups:
        group["lr"] = hi
        group["initial_lr"] = hi
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # as the HF Trainer's --optim adafactor: fixed lr from the schedule, no relative steps
        return Adafactor(params, lr=recipe.lr, scale_parameter=False, relative_step=False, warmup_init=False,
                         weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


@dataclass
class RunContext:
    recipe: Recipe
    rank: int
    world: int
    out: Path

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _say(ctx: RunContext, msg: str) -> None:
    if ctx.is_main:
        print(msg, flush=True)


def train(recipe_path: Path, stage: str, ds_config_path: Path | None = None, resume: bool = False) -> dict:
    recipe = load_recipe(recipe_path)
    if recipe.stage != stage:
        raise RecipeError(f"{recipe.source}: stage is {recipe.stage}, but `medtrain train {stage}` was run")
    ctx = RunContext(recipe, dist.get_rank(), dist.get_world_size(), Path(recipe.output_dir))
    tok_sha = tokenizer_sha256(recipe.tokenizer_dir)
    samples = open_samples(recipe.data, stage, recipe.seq_len, recipe.packing, tokenizer_sha256=tok_sha)
    manifest = samples.data.manifest
    plan = StepPlan(len(samples), recipe.global_batch, recipe.micro_batch, ctx.world, recipe.seed)
    planned = make_plan(recipe, {"localhost": ctx.world})  # the steps and batch `medtrain plan` reports
    accumulation, total_steps = planned.accumulation, planned.total_steps
    vocab = manifest["tokenizer"]["vocab_size"]
    cfg = hf_config(recipe.model, vocab, recipe.attn_implementation)
    ds_config = json.loads(Path(ds_config_path).read_text()) if ds_config_path else ds_config_for(planned)
    if ds_config["train_batch_size"] != recipe.global_batch:
        raise RecipeError(f"{ds_config_path}: train_batch_size {ds_config['train_batch_size']} != recipe "
                          f"global_batch {recipe.global_batch}; regenerate it with `medtrain launch`")
    _say(ctx, f"medtrain: {stage} on {ctx.world} ranks, {len(samples):,} samples/epoch, {total_steps} steps, "
              f"batch {recipe.micro_batch} x {accumulation} x {ctx.world} = {recipe.global_batch}, {recipe.precision}")

    model = build_model(recipe.model, cfg, vocab, ds_config, recipe.precision, recipe.seed,
                        recipe.gradient_checkpointing)
    optimizer = make_optimizer(model, recipe)
    import deepspeed

    ds_config = dict(ds_config)
    schedule = ds_config.pop("scheduler", None)
    scheduler = warmup_decay(optimizer, schedule["params"]) if schedule else None
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                           lr_scheduler=scheduler)
    release_hf_deepspeed_config()

    ckpt_root = ctx.out / "checkpoints"
    start = 0
    if resume:
        done = checkpoint.complete_checkpoints(ckpt_root)
        if done:
            state = checkpoint.load(engine, done[-1], recipe.precision)
            start = state["step"]
            _say(ctx, f"resumed from {done[-1]} at step {start}")
        else:
            _say(ctx, f"--resume: no complete checkpoint under {ckpt_root}; starting from step 0")

    pad_id = manifest["tokenizer"].get("pad_id")
    pad_id = manifest["tokenizer"]["eos_id"] if pad_id is None else pad_id
    data_sha = hashlib.sha256((Path(recipe.data) / "manifest.json").read_bytes()).hexdigest()

    def trainer_state(step: int) -> dict:
        return {"step": step, "epoch": step // plan.steps_per_epoch, "samples_seen": step * recipe.global_batch,
                "total_steps": total_steps, "stage": stage, "precision": recipe.precision,
                "recipe": recipe.to_dict(), "tokenizer_dir": str(recipe.tokenizer_dir),
                "data_manifest_sha256": data_sha, "vocab_size": vocab, "bos_id": manifest["tokenizer"]["bos_id"],
                "eos_id": manifest["tokenizer"]["eos_id"], "pad_id": manifest["tokenizer"].get("pad_id"),
                "world_size": ctx.world, "template": manifest.get("template")}

    def save(step: int) -> None:
        checkpoint.save(engine, ckpt_root, step, trainer_state(step),
                        lambda path: save_hf_config(cfg, path, recipe.precision), recipe.keep_checkpoints)
        _say(ctx, f"checkpoint {ckpt_root / checkpoint.tag_for(step)}")

    logger = MetricsLogger(ctx.out, ctx.is_main)
    watch = LossScaleWatch(ds_config.get("fp16", {}).get("min_loss_scale", 1), recipe.loss_scale_patience)
    t_start = time.perf_counter()
    window = {"tokens": 0, "samples": 0, "data": 0.0, "time": 0.0, "loss": 0.0, "n": 0}
    engine.train()
    for step in range(start, total_steps):
        t0 = time.perf_counter()
        lr = engine.get_lr()[0]
        step_loss, data_time, tokens, real = 0.0, 0.0, 0, 0
        for ids in plan.micro_ids(step, ctx.rank):
            td = time.perf_counter()
            batch = collate(samples, ids, pad_id)
            data_time += time.perf_counter() - td
            mask = batch["attention_mask"]
            full = bool(mask.all())  # no padding: let SDPA take its causal fast path instead of a 4-D mask
            logits = engine(input_ids=batch["input_ids"], attention_mask=None if full else mask).logits
            loss = token_loss(logits, batch["labels"])
            engine.backward(loss)
            engine.step()
            step_loss += loss.item()
            tokens += int(mask.sum())
            real += int((ids >= 0).sum())
        window["time"] += time.perf_counter() - t0
        window["data"] += data_time
        window["loss"] += step_loss / accumulation  # this rank's sums; summed over ranks once per log step
        window["tokens"] += tokens
        window["samples"] += real
        window["n"] += 1
        fp16 = recipe.precision == "fp16"
        scale = float(engine.optimizer.loss_scale) if fp16 else None
        done_steps = step + 1
        if done_steps % recipe.log_every == 0 or done_steps == total_steps:
            elapsed = time.perf_counter() - t_start
            gnorm = engine.get_global_grad_norm()
            sums = torch.tensor([window["loss"], window["tokens"], window["samples"]], dtype=torch.float64)
            dist.all_reduce(sums)
            loss_sum, all_tokens, all_samples = sums.tolist()
            record = {"step": done_steps, "total_steps": total_steps, "loss": loss_sum / ctx.world / window["n"],
                      "lr": lr, "grad_norm": float(gnorm) if gnorm is not None else float("nan"),
                      "tokens_per_s": all_tokens / window["time"],
                      "samples_per_s": all_samples / window["time"],
                      "data_wait_frac": window["data"] / max(window["time"], 1e-9), "elapsed_s": elapsed,
                      "eta_s": elapsed / (done_steps - start) * (total_steps - done_steps),
                      "epoch": step // plan.steps_per_epoch}
            if fp16:
                record.update({"loss_scale": scale, "skipped_steps": int(engine.skipped_steps)})
            logger.log(record)
            window = {k: 0 if isinstance(v, int) else 0.0 for k, v in window.items()}
        if fp16:
            watch.update(scale, int(engine.skipped_steps))  # raises TrainingError when the scale collapsed
        if recipe.checkpoint_every and done_steps % recipe.checkpoint_every == 0 and done_steps != total_steps:
            save(done_steps)
    logger.close()
    if start < total_steps or not checkpoint.complete_checkpoints(ckpt_root):
        save(total_steps)
    result = export_from_engine(engine, ctx, trainer_state(total_steps), samples, cfg)
    return result


def export_from_engine(engine, ctx: RunContext, state: dict, samples, cfg) -> dict:
    """Gather the 16-bit weights (all ranks), write the HF directory, and check its logits against the engine's."""
    from medtrain.export import lineage_for, write_hf_dir

    tmp = ctx.out / f".gather-{os.getpid()}"
    saved = engine.save_16bit_model(str(tmp), "weights.pt")
    if not saved:
        raise TrainingError("DeepSpeed saved no weights: stage3_gather_16bit_weights_on_model_save is off in the "
                            "DeepSpeed config; turn it on (medtrain's presets do)")
    probe = torch.as_tensor(samples[0].input_ids[:32]).unsqueeze(0)
    engine.eval()
    with torch.no_grad():
        engine_logits = engine(input_ids=probe).logits.float()
    out = ctx.out / "export"
    result = {"export": str(out)}
    if ctx.is_main:
        state_dict = torch.load(tmp / "weights.pt", map_location="cpu", weights_only=True)
        ckpt = ctx.out / "checkpoints" / f"step_{state['step']:06d}"
        write_hf_dir(state_dict, ckpt, state, out, lineage_for(state))
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
        with torch.no_grad():
            hf_logits = reloaded(input_ids=probe).logits.float()
        diff = (hf_logits - engine_logits).abs().max().item()
        torch.save({"input_ids": probe, "logits": engine_logits}, ctx.out / "engine_probe.pt")
        (out / "export_check.json").write_text(json.dumps({"probe_tokens": probe.shape[1], "max_abs_diff": diff}))
        result["max_abs_diff"] = diff
        print(f"exported {out} (logits vs engine: max abs diff {diff:.2e})", flush=True)
    dist.barrier()
    return result


def run_rank(recipe: Path, stage: str, ds_config: Path | None, resume: bool) -> None:
    """Entry point on each rank: join the group, train, leave the group, exit with a meaningful code."""
    import warnings

    import deepspeed

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch c10d renames, once per collective

    from launch.ranks import export_rank_env

    export_rank_env()
    deepspeed.init_distributed(timeout=timedelta(minutes=int(os.environ.get("MEDTRAIN_DIST_TIMEOUT_MIN", "30"))))
    code = 0
    try:
        train(recipe, stage, ds_config, resume)
    except (RecipeError, checkpoint.CheckpointError, ValueError) as e:
        if dist.get_rank() == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        code = 2
    except TrainingError as e:
        if dist.get_rank() == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if dist.is_initialized():
            dist.destroy_process_group()
    os._exit(code)  # a clean exit: no "terminate called without an active exception"
