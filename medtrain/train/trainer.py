"""The per-rank training loop on deepspeed.initialize: batch, forward, loss, backward, step, log, checkpoint.

`medtrain train continual|sft --recipe R --run-spec S` is what `medtrain launch` starts on every rank. The
Trainer has torchtune's shape: setup (data, model, engine, resume), train_step, save, export, cleanup.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from medtrain.core.checkpoint_files import newest_good, tag_for
from medtrain.core.digest import sha256_file
from medtrain.core.environment import check_environment
from medtrain.core.errors import RunFailed
from medtrain.core.heartbeat import heartbeat
from medtrain.core.log import get_logger, log_rank_zero
from medtrain.core.model_specs import resolve_shape
from medtrain.core.publish import publish_json
from medtrain.core.rank import Stopped, run_rank, stop_requested
from medtrain.core.recipe import Recipe, RecipeError, load_recipe
from medtrain.core.run_spec import DataSize, RunSpec
from medtrain.data_prep.reader import open_samples, packed_documents
from medtrain.data_prep.tokenizer import tokenizer_identity
from medtrain.train import checkpoint
from medtrain.train.attention import packed_attention
from medtrain.train.batches import StepPlan, collate
from medtrain.train.loss import LossReduction, labelled, token_loss_sum
from medtrain.train.loss_curve import plot_loss
from medtrain.train.metrics import MetricsLogger, StepMetrics
from medtrain.train.model_dir import write_hf_dir
from medtrain.train.modeling import build_model, hf_config, release_hf_deepspeed_config, save_hf_config
from medtrain.train.reshard import written_world_size
from medtrain.train.state import TrainerState

log = get_logger(__name__)


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


def forward(engine, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits for a collated batch already on the engine's device. Rows of packed documents carry
    their position ids, from which the documents' attention (train/attention.py) finds each document."""
    if "position_ids" in batch:
        return engine(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    mask = batch["attention_mask"]
    full = bool(mask.all())  # no padding: let SDPA take its causal fast path instead of a 4-D mask
    return engine(input_ids=batch["input_ids"], attention_mask=None if full else mask).logits


def step_agreement(batches: list[dict[str, torch.Tensor]], device) -> tuple[int, bool]:
    """The step's one collective before its forward, what every rank must agree on: the labelled tokens of the
    whole global batch (the token-weighted loss's denominator) and whether any rank was asked to stop (the
    signal reaches ranks at different moments; all must stop at the same step boundary, or the ones that go on
    would wait forever in the next collective)."""
    mine = torch.tensor([float(sum(labelled(b["labels"]) for b in batches)), float(stop_requested())],
                        dtype=torch.float64, device=device)
    dist.all_reduce(mine)
    return int(mine[0].item()), mine[1].item() > 0


def accumulate(engine, batches: list[dict[str, torch.Tensor]], reduction: LossReduction | str, world: int,
               global_labelled: int) -> tuple[float, int]:
    """Forward and backward every micro-batch of one optimizer step on this rank, and step the engine (which
    applies the optimizer at the last one). Returns (loss, labelled tokens of this rank): with reduction "token"
    the loss summed over this rank's labelled tokens, with "micro_batch" the mean of its micro-batch means.

    token: DeepSpeed divides each backward by the accumulation steps and averages the gradients over the ranks;
    the scale below undoes both and divides by the labelled tokens of the whole global batch (`global_labelled`,
    from step_agreement), so the step's gradient is the sum of every labelled token's gradient over their count,
    whichever micro-batch and rank a token sits in (torchtune's and transformers >= 4.46's normalisation)."""
    device, reduction = engine.device, LossReduction.of(reduction)
    counts = [labelled(b["labels"]) for b in batches]
    scale = len(batches) * world / max(global_labelled, 1)
    loss_sum = 0.0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        backward, logged = reduction.micro_batch(forward(engine, batch), batch["labels"], len(batches), scale)
        engine.backward(backward)
        loss_sum += logged
        engine.step()
    return loss_sum, sum(counts)


def lr_factor(schedule: dict, i: int) -> float:
    """The lr of step i (0-based) over the peak: warmup trains step i at (i + 1) / warmup of the peak (DeepSpeed's
    WarmupLR would train step 1 at 0 and clamp warmup to >= 2 steps), then linear or cosine decay to 0 at the
    schedule's last step, or constant."""
    total, warmup = schedule["schedule_steps"], schedule["warmup_steps"]
    if i < warmup:
        return (i + 1) / warmup
    if schedule["type"] == "constant":
        return 1.0
    progress = min(1.0, (i - warmup) / max(1, total - warmup))
    if schedule["type"] == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, (total - i) / max(1, total - warmup))


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: dict) -> torch.optim.lr_scheduler.LambdaLR:
    for group in optimizer.param_groups:
        group["lr"] = schedule["lr"]
        group["initial_lr"] = schedule["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(schedule, i))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Matrices and embeddings decay, norms and biases do not, in two groups in that order: the HF Trainer's
    split (and nanoGPT's). The groups matter beyond decay: under ZeRO-3 each group is flattened into one
    partition per rank, and Adafactor clips its update by the RMS of the whole tensor it is given, so the same
    groups are what makes a run's losses equal the Trainer's (tests/system/test_hf_trainer_parity.py)."""
    decay, keep = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else keep).append(p)  # ZeRO-3 params are 1-D
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0})
            if g["params"]]


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # as the HF Trainer's --optim adafactor: fixed lr from the schedule, no relative steps
        return Adafactor(groups, lr=recipe.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    return torch.optim.AdamW(groups, lr=recipe.lr)


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

    # ----- setup ----------------------------------------------------------------------------------------------

    def setup(self) -> None:
        heartbeat().beat("setup")
        self.logger = MetricsLogger(self.out, self.is_main, self.recipe.report_to, self.recipe.to_dict())
        self._setup_data()
        self._setup_engine()
        if self.resume:
            self._resume()
            self.logger.rewind(self.start_step)

    def _setup_data(self) -> None:
        r = self.recipe
        tokenizer = tokenizer_identity(r.tokenizer_dir)
        self.samples = open_samples(r.data, self.stage, r.seq_len, r.packing, tokenizer=tokenizer)
        self.val_samples = open_samples(r.val_data, self.stage, r.seq_len, r.packing, tokenizer=tokenizer) \
            if r.val_data else None
        tok = self.samples.data.manifest["tokenizer"]
        self.cfg = hf_config(r.model, tok["vocab_size"], self._attention())
        self.spec = self._run_spec()
        self.plan = StepPlan.of(self.spec)
        self.state = TrainerState(
            step=0, epoch=0, samples_seen=0, total_steps=self.spec.total_steps, stage=self.stage,
            precision=r.precision, recipe=r.to_dict(), tokenizer_dir=str(r.tokenizer_dir),
            data_manifest_sha256=sha256_file(Path(r.data) / "manifest.json"),
            vocab_size=tok["vocab_size"], bos_id=tok["bos_id"], eos_id=tok["eos_id"], pad_id=tok.get("pad_id"),
            world_size=self.world, template=self.samples.data.manifest.get("template"))
        log_rank_zero(log, f"medtrain: {self.stage} from {r.weights}")
        log_rank_zero(log, f"medtrain: {self.stage} on {self.world} ranks, {len(self.samples):,} samples/epoch, "
                 f"{self.spec.total_steps} steps{self._of_schedule()}, batch {self.spec.batch_equation()}, "
                 f"{r.precision}")
        packed = self.spec.data.packing_line(self.spec.steps_per_epoch)
        if packed:
            log_rank_zero(log, f"medtrain: packing documents: {packed}")

    def _attention(self) -> str:
        """The recipe's attention, or for rows of packed documents the kind that keeps each document apart."""
        if self.recipe.packing != "documents":
            return self.recipe.attn_implementation
        cuda = torch.cuda.is_available()
        return packed_attention("cuda" if cuda else "cpu", torch.cuda.get_device_capability() if cuda else None)

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
        data = DataSize(len(self.samples), self.samples.num_tokens(), f"prepared: {self.recipe.data}",
                        packed_documents(self.samples))
        return RunSpec.compute(self.recipe, self.world, data, self.cfg.hidden_size)

    def _setup_engine(self) -> None:
        import deepspeed

        r = self.recipe
        ds_config = dict(self.spec.ds_config)
        started = time.perf_counter()
        if Path(r.model).is_dir():  # minutes for a 13B model: say so before, and how long it took after
            shards = sorted(Path(r.model).glob("*.safetensors")) or sorted(Path(r.model).glob("*.bin"))
            log_rank_zero(log, f"medtrain: loading weights from {r.model} ({len(shards)} file(s), "
                               f"{sum(f.stat().st_size for f in shards) / 2**30:.1f} GiB) into ZeRO-3 shards")
        model = build_model(r.model, self.cfg, self.state.vocab_size, ds_config, r.precision, r.seed,
                            r.gradient_checkpointing)
        optimizer = make_optimizer(model, r)
        scheduler = lr_scheduler(optimizer, self.spec.schedule)
        if self.is_main:  # the schedule actually run, step by step, beside the run's other records
            publish_json(self.out / "schedule.json", {**self.spec.schedule, "max_grad_norm": r.max_grad_norm,
                                                      "loss_reduction": r.loss_reduction,
                                                      "lr_by_step": [r.lr * lr_factor(self.spec.schedule, i)
                                                                     for i in range(self.spec.total_steps)]})
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                                    lr_scheduler=scheduler)
        release_hf_deepspeed_config()
        shape = resolve_shape(r.model, vocab_size=self.state.vocab_size)
        log_rank_zero(log, f"medtrain: DeepSpeed engine ready in {time.perf_counter() - started:.1f} s: ZeRO-3, "
                           f"{r.precision}, {shape.num_params() / 1e6:,.1f}M parameters over {self.world} ranks "
                           "(DeepSpeed's own lines are in logs/launch.log and logs/rankN.log)")
        self.fp16 = r.precision == "fp16"
        scaler = getattr(self.engine.optimizer, "loss_scaler", None)
        if scaler is not None and hasattr(scaler, "raise_error_at_min_scale"):
            # DeepSpeed would raise a bare Exception ("cannot decrease scale anymore") at the first overflow on
            # the floor, with no config key to turn that off; LossScaleWatch decides instead, with patience and a
            # message that says what to change
            scaler.raise_error_at_min_scale = False
        self.watch = LossScaleWatch(ds_config.get("fp16", {}).get("min_loss_scale", 1), r.loss_scale_patience)

    def _resume(self) -> None:
        path = checkpoint.pick_for_resume(self.ckpt_root)
        if path is None:
            log_rank_zero(log, f"--resume: no verified checkpoint under {self.ckpt_root}; starting from step 0")
            return
        written = written_world_size(path)
        self.start_step = checkpoint.load(self.engine, path, self.recipe.precision).step
        moved = f", re-split from {written} to {self.world} ranks" if written != self.world else ""
        log_rank_zero(log, f"resumed from {path} at step {self.start_step}{moved}")

    # ----- the loop -------------------------------------------------------------------------------------------

    def train_step(self, step: int, saved: bool) -> tuple[float, int, int, int, float]:
        """One optimizer step: (this rank's loss as accumulate() returns it, labelled tokens, tokens, real
        samples, seconds spent collating). Raises Stopped, before any forward, when a rank was asked to stop
        since the last step (`saved`: that step's checkpoint is already written)."""
        t0 = time.perf_counter()
        micro = self.plan.micro_ids(step, self.rank)
        batches = [collate(self.samples, ids, self.state.pad_or_eos) for ids in micro]
        data_seconds = time.perf_counter() - t0
        global_labelled, stop = step_agreement(batches, self.engine.device)
        if stop and step > self.start_step:
            if not saved:
                self.save(step)
            raise Stopped(f"stopped at step {step} of {self.spec.total_steps} as asked; checkpoint "
                          f"{self.ckpt_root / tag_for(step)}; continue with --resume")
        loss, labels = accumulate(self.engine, batches, self.recipe.loss_reduction, self.world, global_labelled)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        real = sum(int((ids >= 0).sum()) for ids in micro)
        return loss, labels, tokens, real, data_seconds

    def train(self) -> None:
        r, total = self.recipe, self.spec.total_steps
        metrics = StepMetrics(self.logger, self.world, self.start_step, total, self.spec.steps_per_epoch,
                              resolve_shape(r.model, vocab_size=self.state.vocab_size), r.gradient_checkpointing,
                              r.peak, reduction=LossReduction.of(r.loss_reduction))
        self.engine.train()
        beat = heartbeat()
        saved = False
        for step in range(self.start_step, total):
            beat.beat("step", step)
            t0 = time.perf_counter()
            lr = self.engine.get_lr()[0]
            loss, labels, tokens, real, data_seconds = self.train_step(step, saved)
            metrics.add(loss, labels, tokens, real, time.perf_counter() - t0, data_seconds)
            done = step + 1
            validate = self.val_samples is not None and ((r.eval_every and done % r.eval_every == 0)
                                                         or done == total)
            if done % r.log_every == 0 or done == total or validate:
                extra = {**self._loss_scale(), **(self.validate() if validate else {})}
                metrics.flush(done, lr, self.engine.get_global_grad_norm(), extra)
            if self.fp16:  # raises TrainingError when the scale has collapsed
                self.watch.update(float(self.engine.optimizer.loss_scale), int(self.engine.skipped_steps))
            saved = bool(r.checkpoint_every and done % r.checkpoint_every == 0 and done != total)
            if saved:
                self.save(done)
        if self.start_step < total or newest_good(self.ckpt_root, deep=False) is None:
            self.save(total)

    def validate(self) -> dict:
        """Token-weighted loss over the whole held-out split: rank r takes samples r, r + W, ...; under ZeRO-3 every
        forward gathers parameters from all ranks, so a rank whose share has run out still forwards a batch of
        ghosts until the longest share is done."""
        samples, world, micro = self.val_samples, self.world, self.recipe.micro_batch
        mine = np.arange(self.rank, len(samples), world)
        rounds = math.ceil(math.ceil(len(samples) / world) / micro)
        loss_sum, count = 0.0, 0
        self.engine.eval()
        with torch.no_grad():
            for k in range(rounds):
                ids = np.full(micro, -1, dtype=np.int64)
                part = mine[k * micro:(k + 1) * micro]
                ids[:len(part)] = part
                batch = {k2: v.to(self.engine.device) for k2, v in collate(samples, ids, self.state.pad_or_eos).items()}
                loss_sum += token_loss_sum(forward(self.engine, batch), batch["labels"]).item()
                count += labelled(batch["labels"])
        self.engine.train()
        sums = torch.tensor([loss_sum, float(count)], dtype=torch.float64, device=self.engine.device)
        dist.all_reduce(sums)
        return {"val_loss": sums[0].item() / max(sums[1].item(), 1.0), "val_tokens": int(sums[1].item())}

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
        log_rank_zero(log, f"checkpoint {self.ckpt_root / tag_for(step)}")

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
        log.info(f"exported {out} (logits vs engine: max abs diff {diff:.2e})")
        return diff

    def cleanup(self, finished: bool = False) -> None:
        """`finished`: the tracking servers (recipe report_to) also get the loss curve and the run's records."""
        artifacts = []
        if finished and self.logger.trackers is not None and self.logger.trackers.live:
            artifacts = [plot_loss([self.out], self.out / "loss_curve.png"), self.out / "metrics.jsonl",
                         self.out / "recipe.yaml", self.out / "export" / "lineage.json"]
        self.logger.close(artifacts)


def train(recipe_path: Path, stage: str, run_spec: Path | None = None, resume: bool = False) -> dict:
    recipe = load_recipe(recipe_path).with_validation()  # `val_data: auto` decided here for a rank started by hand
    check_environment(recipe.precision, wants_gpu=recipe.wants_gpu)  # before any weight loads
    trainer = Trainer(recipe, stage, run_spec, resume)
    trainer.setup()
    trainer.train()
    result = trainer.export()
    trainer.cleanup(finished=True)
    return result


def train_on_rank(recipe: Path, stage: str, run_spec: Path | None, resume: bool) -> None:
    """Entry point on each rank: join the group, train, leave the group, exit with a meaningful code."""

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch c10d renames, once per collective
    run_rank(lambda: train(recipe, stage, run_spec, resume))
