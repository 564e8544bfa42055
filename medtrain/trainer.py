"""The per-rank training loop on deepspeed.initialize: batch, forward, loss, backward, step, log, checkpoint.

`medtrain train continual|sft --recipe R --run-spec S` is what `medtrain launch` starts on every rank. The
Trainer has torchtune's shape: setup (data, model, engine, resume), train_step, save, export, cleanup.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from medtrain import checkpoint
from medtrain.batches import IGNORE, StepPlan, collate
from medtrain.core.checkpoint_files import newest_good, tag_for
from medtrain.core.errors import RunFailed
from medtrain.core.heartbeat import heartbeat
from medtrain.core.model_specs import resolve_shape
from medtrain.core.rank import Stopped, stop_requested
from medtrain.core.rank import run_rank as run_as_rank
from medtrain.core.recipe import Recipe, RecipeError, load_recipe
from medtrain.core.run_spec import DataSize, RunSpec
from medtrain.data_prep.format import sha256_file
from medtrain.data_prep.reader import open_samples
from medtrain.data_prep.tokenizer import tokenizer_identity
from medtrain.metrics import MetricsLogger, StepMetrics
from medtrain.model_dir import write_hf_dir
from medtrain.modeling import build_model, hf_config, release_hf_deepspeed_config, save_hf_config
from medtrain.state import TrainerState


class TrainingError(RunFailed):
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


class Trainer:
    """One rank's run. Every rank constructs it; only rank 0 prints, logs and writes shared files."""

    def __init__(self, recipe: Recipe, stage: str, run_spec: Path | None = None, resume: bool = False):
        if recipe.stage != stage:
            raise RecipeError(f"{recipe.source}: stage is {recipe.stage}, but `medtrain train {stage}` was run")
        self.recipe, self.stage, self.run_spec_path, self.resume = recipe, stage, run_spec, resume
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.out = Path(recipe.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.start_step = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def say(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    # ----- setup ----------------------------------------------------------------------------------------------

    def setup(self) -> None:
        heartbeat().beat("setup")
        self.logger = MetricsLogger(self.out, self.is_main)
        self._setup_data()
        self._setup_engine()
        if self.resume:
            self._resume()

    def _setup_data(self) -> None:
        r = self.recipe
        self.samples = open_samples(r.data, self.stage, r.seq_len, r.packing,
                                    tokenizer=tokenizer_identity(r.tokenizer_dir))
        tok = self.samples.data.manifest["tokenizer"]
        self.cfg = hf_config(r.model, tok["vocab_size"], r.attn_implementation)
        self.spec = self._run_spec()
        self.plan = StepPlan.of(self.spec)
        self.state = TrainerState(
            step=0, epoch=0, samples_seen=0, total_steps=self.spec.total_steps, stage=self.stage,
            precision=r.precision, recipe=r.to_dict(), tokenizer_dir=str(r.tokenizer_dir),
            data_manifest_sha256=sha256_file(Path(r.data) / "manifest.json"),
            vocab_size=tok["vocab_size"], bos_id=tok["bos_id"], eos_id=tok["eos_id"], pad_id=tok.get("pad_id"),
            world_size=self.world, template=self.samples.data.manifest.get("template"))
        self.say(f"medtrain: {self.stage} from {r.weights}")
        self.say(f"medtrain: {self.stage} on {self.world} ranks, {len(self.samples):,} samples/epoch, "
                 f"{self.spec.total_steps} steps{self._of_schedule()}, batch {self.spec.batch_equation()}, "
                 f"{r.precision}")

    def _of_schedule(self) -> str:
        spec = self.spec
        return f" (max_steps) of a {spec.schedule_steps}-step schedule" if spec.total_steps < spec.schedule_steps \
            else ""

    def _run_spec(self) -> RunSpec:
        """The launch's run_spec.json when there is one (checked against what this rank sees), else the same
        computation here (a rank started by hand)."""
        if self.run_spec_path is not None:
            spec = RunSpec.read(self.run_spec_path)
            spec.check_matches(self.world, len(self.samples), str(self.run_spec_path))
            return spec
        data = DataSize(len(self.samples), self.samples.num_tokens(), f"prepared: {self.recipe.data}")
        return RunSpec.compute(self.recipe, self.world, data, self.cfg.hidden_size)

    def _setup_engine(self) -> None:
        import deepspeed

        r = self.recipe
        ds_config = dict(self.spec.ds_config)
        model = build_model(r.model, self.cfg, self.state.vocab_size, ds_config, r.precision, r.seed,
                            r.gradient_checkpointing)
        optimizer = make_optimizer(model, r)
        schedule = ds_config.pop("scheduler", None)
        scheduler = warmup_decay(optimizer, schedule["params"]) if schedule else None
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                                    lr_scheduler=scheduler)
        release_hf_deepspeed_config()
        self.fp16 = r.precision == "fp16"
        scaler = getattr(self.engine.optimizer, "loss_scaler", None)
        if scaler is not None and hasattr(scaler, "raise_error_at_min_scale"):
            # DeepSpeed would raise a bare Exception ("cannot decrease scale anymore") at the first overflow on
            # the floor, with no config key to turn that off; LossScaleWatch decides instead, with patience and a
            # message that says what to change
            scaler.raise_error_at_min_scale = False
        self.watch = LossScaleWatch(ds_config.get("fp16", {}).get("min_loss_scale", 1), r.loss_scale_patience)

    def _resume(self) -> None:
        path = checkpoint.pick_for_resume(self.ckpt_root, self.say)
        if path is None:
            self.say(f"--resume: no verified checkpoint under {self.ckpt_root}; starting from step 0")
            return
        from medtrain.reshard import written_world_size

        written = written_world_size(path)
        self.start_step = checkpoint.load(self.engine, path, self.recipe.precision).step
        moved = f", re-split from {written} to {self.world} ranks" if written != self.world else ""
        self.say(f"resumed from {path} at step {self.start_step}{moved}")

    # ----- the loop -------------------------------------------------------------------------------------------

    def train_step(self, step: int) -> tuple[float, int, int, float]:
        """One optimizer step: (mean micro-batch loss, tokens, real samples, seconds spent collating)."""
        loss_sum, data_seconds, tokens, real = 0.0, 0.0, 0, 0
        device = self.engine.device
        for ids in self.plan.micro_ids(step, self.rank):
            t0 = time.perf_counter()
            batch = {k: v.to(device) for k, v in collate(self.samples, ids, self.state.pad_or_eos).items()}
            data_seconds += time.perf_counter() - t0
            mask = batch["attention_mask"]
            full = bool(mask.all())  # no padding: let SDPA take its causal fast path instead of a 4-D mask
            logits = self.engine(input_ids=batch["input_ids"], attention_mask=None if full else mask).logits
            loss = token_loss(logits, batch["labels"])
            self.engine.backward(loss)
            self.engine.step()
            loss_sum += loss.item()
            tokens += int(mask.sum())
            real += int((ids >= 0).sum())
        return loss_sum / self.plan.accumulation, tokens, real, data_seconds

    def train(self) -> None:
        r, total = self.recipe, self.spec.total_steps
        metrics = StepMetrics(self.logger, self.world, self.start_step, total, self.spec.steps_per_epoch,
                              resolve_shape(r.model, vocab_size=self.state.vocab_size), r.gradient_checkpointing,
                              r.peak)
        self.engine.train()
        beat = heartbeat()
        for step in range(self.start_step, total):
            beat.beat("step", step)
            t0 = time.perf_counter()
            lr = self.engine.get_lr()[0]
            mean_loss, tokens, real, data_seconds = self.train_step(step)
            metrics.add(mean_loss, tokens, real, time.perf_counter() - t0, data_seconds)
            done = step + 1
            if done % r.log_every == 0 or done == total:
                metrics.flush(done, lr, self.engine.get_global_grad_norm(), self._loss_scale())
            if self.fp16:  # raises TrainingError when the scale has collapsed
                self.watch.update(float(self.engine.optimizer.loss_scale), int(self.engine.skipped_steps))
            saved = bool(r.checkpoint_every and done % r.checkpoint_every == 0 and done != total)
            if saved:
                self.save(done)
            if done != total and self._all_asked_to_stop():
                if not saved:
                    self.save(done)
                raise Stopped(f"stopped at step {done} of {total} as asked; checkpoint {self.ckpt_root / tag_for(done)}"
                              "; continue with --resume")
        if self.start_step < total or newest_good(self.ckpt_root, deep=False) is None:
            self.save(total)

    def _all_asked_to_stop(self) -> bool:
        """Whether any rank was asked to stop (the signal reaches ranks at different steps): all of them stop at
        the same step boundary, or the ones that go on would wait forever in the next collective."""
        flag = torch.tensor([1.0 if stop_requested() else 0.0], device=self.engine.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _loss_scale(self) -> dict:
        if not self.fp16:
            return {}
        return {"loss_scale": float(self.engine.optimizer.loss_scale), "skipped_steps": int(self.engine.skipped_steps)}

    def state_at(self, step: int) -> TrainerState:
        return self.state.at(step, self.spec.steps_per_epoch, self.spec.global_batch)

    def save(self, step: int) -> None:
        heartbeat().beat("save", step)
        checkpoint.save(self.engine, self.ckpt_root, self.state_at(step),
                        lambda path: save_hf_config(self.cfg, path, self.recipe.precision),
                        self.recipe.keep_checkpoints)
        self.say(f"checkpoint {self.ckpt_root / tag_for(step)}")

    # ----- export ---------------------------------------------------------------------------------------------

    def export(self) -> dict:
        """Gather the 16-bit weights (all ranks), write the HF directory, and check its logits against the
        engine's on a probe from the data."""
        heartbeat().beat("export", self.spec.total_steps)
        engine, state = self.engine, self.state_at(self.spec.total_steps)
        gathered = self.out / f".gather-{self.rank}"
        if not engine.save_16bit_model(str(gathered), "weights.pt"):
            raise TrainingError("DeepSpeed saved no weights: stage3_gather_16bit_weights_on_model_save is off in "
                                "the DeepSpeed config; turn it on (medtrain's presets do)")
        probe = torch.as_tensor(self.samples[0].input_ids[:32]).unsqueeze(0)
        engine.eval()
        with torch.no_grad():
            engine_logits = engine(input_ids=probe.to(engine.device)).logits.float().cpu()
        out = self.out / "export"
        result: dict = {"export": str(out)}
        if self.is_main:
            state_dict = torch.load(gathered / "weights.pt", map_location="cpu", weights_only=True)
            write_hf_dir(state_dict, self.ckpt_root / tag_for(state.step), state, out)
            result["max_abs_diff"] = self._check_export(out, probe, engine_logits)
        dist.barrier()
        shutil.rmtree(gathered, ignore_errors=True)
        return result

    def _check_export(self, out: Path, probe: torch.Tensor, engine_logits: torch.Tensor) -> float:
        from transformers import AutoModelForCausalLM

        device = self.engine.device  # the same kernels as the engine's forward: equal logits in the same dtype
        reloaded = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True).to(device)
        with torch.no_grad():
            hf_logits = reloaded(input_ids=probe.to(device)).logits.float().cpu()
        del reloaded
        diff = (hf_logits - engine_logits).abs().max().item()
        torch.save({"input_ids": probe, "logits": engine_logits}, self.out / "engine_probe.pt")
        (out / "export_check.json").write_text(json.dumps({"probe_tokens": probe.shape[1], "max_abs_diff": diff}))
        print(f"exported {out} (logits vs engine: max abs diff {diff:.2e})", flush=True)
        return diff

    def cleanup(self) -> None:
        self.logger.close()


def train(recipe_path: Path, stage: str, run_spec: Path | None = None, resume: bool = False) -> dict:
    trainer = Trainer(load_recipe(recipe_path), stage, run_spec, resume)
    trainer.setup()
    trainer.train()
    result = trainer.export()
    trainer.cleanup()
    return result


def run_rank(recipe: Path, stage: str, run_spec: Path | None, resume: bool) -> None:
    """Entry point on each rank: join the group, train, leave the group, exit with a meaningful code."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch c10d renames, once per collective
    run_as_rank(lambda: train(recipe, stage, run_spec, resume))
