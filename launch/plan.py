"""Memory per GPU, steps, tokens and time for a recipe on a hostfile, before a cluster slot is spent.

Model-state memory follows ZeRO-3's partitioning: every byte of parameter, gradient and optimizer state is
split over all ranks. Adafactor under ZeRO-3 sees flat fp32 partitions, so its second moment cannot be
factored: 4 bytes per parameter, not the factored size (docs/design.md, Adafactor under ZeRO-3).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from medtrain.core.ds_config import PRESETS, ConfigError, build_ds_config, precision_warning
from medtrain.core.flops import TokenFlops, flops_per_token
from medtrain.core.gpu_build import attention_kernel
from medtrain.core.model_specs import LlamaShape, resolve_shape
from medtrain.core.recipe import Recipe, RecipeError, load_recipe
from medtrain.core.run_spec import LOSS_CHUNK_TOKENS, DataSize, RunSpec
from medtrain.data_prep.reader import count_samples
from medtrain.launch.hostfile import read_hostfile

GiB = 2**30
OPTIMIZER_STATE_BYTES = {"adafactor": 4, "adamw": 8}
DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


@dataclass
class Hardware:
    gpu_mem_gb: float = 0.0
    """Memory per GPU (0: the recipe's preset's: V100 32, A100 40 or 80, H100 80)."""
    peak_tflops: float = 0.0
    """Dense tensor-core peak per GPU in the training dtype (0: the recipe's or its preset's; V100 fp16: 125)."""
    mfu: float = 0.25
    """Assumed model FLOPs utilisation for the time estimate."""
    reserve_gb: float = 2.0
    """CUDA context, NCCL buffers and allocator fragmentation."""


@dataclass
class Plan:
    recipe: Recipe
    shape: LlamaShape
    hosts: int
    spec: RunSpec
    """The batch split, steps, schedule and DeepSpeed JSON that the ranks will read back from run_spec.json."""
    memory: dict[str, float] = field(default_factory=dict)
    """Bytes per GPU by component."""
    gpu_bytes: float = 0.0
    token_flops: TokenFlops | None = None
    flops: float = 0.0
    """Model FLOPs of the whole run (what MFU is measured against)."""
    seconds: float = 0.0
    hardware: Hardware = field(default_factory=Hardware)
    warnings: list[str] = field(default_factory=list)
    """What is allowed but probably not meant: a precision the preset does not recommend, a prepared dataset far
    from the recipe's expected size, checkpoint_every beyond the run."""

    world_size = property(lambda self: self.spec.world_size)

    @property
    def attention(self) -> str:
        """The kernel the preset's GPU generation gets (flash needs compute capability 8.0; a V100 gets SDPA's
        memory-efficient one), so a recipe is read with the attention it will really run."""
        preset = PRESETS.get(self.recipe.preset)  # the CPU preset has no capability: SDPA on the CPU
        return attention_kernel(self.recipe.attn_implementation, preset and preset.capability, self.recipe.precision)
    accumulation = property(lambda self: self.spec.accumulation)
    data = property(lambda self: self.spec.data)
    steps_per_epoch = property(lambda self: self.spec.steps_per_epoch)
    total_steps = property(lambda self: self.spec.total_steps)
    warmup = property(lambda self: self.spec.warmup)

    def with_recipe(self, recipe: Recipe) -> Plan:
        """The same plan for the recipe with its inputs resolved (paths of hub snapshots, the validation split)."""
        return replace(self, recipe=recipe)

    @property
    def total_bytes(self) -> float:
        return sum(self.memory.values())

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.gpu_bytes

    @property
    def checkpoint_bytes(self) -> float:
        """One checkpoint: under ZeRO-3 every rank's fp32 partition and optimizer state (the model-state files
        hold only shapes). Measured on the demo run: 2 x 4,706,552 bytes for 1.18 M params with Adafactor."""
        return self.shape.num_params() * (4 + OPTIMIZER_STATE_BYTES[self.recipe.optimizer])

    @property
    def checkpoints_at_once(self) -> int:
        """Saves every checkpoint_every steps and at the end; a new one is verified before the oldest is pruned,
        so keep_checkpoints + 1 can be on disk at once."""
        every, total = self.recipe.checkpoint_every, self.total_steps
        saved = (max(total, 1) - 1) // every + 1 if every else 1
        keep = self.recipe.keep_checkpoints
        return min(saved, keep + 1) if keep else saved

    @property
    def disk_bytes(self) -> float:
        """What the run writes into output_dir at its fullest: the checkpoints at once and the export."""
        export = self.shape.num_params() * DTYPE_BYTES[self.recipe.precision]
        return self.checkpoint_bytes * self.checkpoints_at_once + export

    def render(self) -> str:
        r, n = self.recipe, self.shape.num_params()
        rows = [
            ("recipe", r.source),
            ("model", f"{r.model}: {n / 1e9:.2f} B params, {self.shape.num_hidden_layers} layers, "
                      f"hidden {self.shape.hidden_size}"),
            ("weights", r.weights),
            ("world size", f"{self.world_size} ranks on {self.hosts} hosts"),
            ("batch", self.spec.batch_equation()),
            ("data", f"{self.data.samples:,} samples, {self.data.tokens:,} tokens per epoch ({self.data.source})"),
            ("steps", f"{self.steps_per_epoch:,} per epoch x {r.epochs} epochs = {self.spec.schedule_steps:,} "
                      f"(warmup {self.warmup})" + (f"; this launch stops after max_steps {self.total_steps:,}"
                                                   if self.total_steps < self.spec.schedule_steps else "")),
            ("tokens", f"{self.data.tokens * r.epochs:,}"),
            *([("packing", f"documents: {packed}")] if (packed := self.data.packing_line(self.steps_per_epoch))
              else []),
            ("attention", self.attention),
            ("disk", f"{self.disk_bytes / GiB:.2f} GiB in {r.output_dir}: {self.checkpoint_bytes / GiB:.2f} GiB per "
                     f"checkpoint x {self.checkpoints_at_once} at once, and the export"),
        ]
        lines = [f"{k:<12} {v}" for k, v in rows]
        lines.append("")
        lines.append(f"{'memory per GPU':<44} {'GiB':>8}")
        for name, b in self.memory.items():
            lines.append(f"  {name:<42} {b / GiB:>8.2f}")
        lines.append(f"  {'total':<42} {self.total_bytes / GiB:>8.2f}  of {self.gpu_bytes / GiB:.1f}")
        lines.append("")
        tf = self.token_flops
        recompute = f", {tf.hardware:.3g} with recomputation (HFU)" if r.gradient_checkpointing else ""
        lines.append(f"compute      {self.flops:.3e} model FLOPs ({tf.model:.3g} per token{recompute})")
        hw = self.hardware
        if hw.peak_tflops > 0:
            lines.append(f"time         {self.seconds / 3600:.1f} h at {hw.mfu:.0%} MFU of {hw.peak_tflops:g} TFLOPS x "
                         f"{self.world_size} GPUs")
        else:
            lines.append("time         unknown: the preset has no peak TFLOPS; pass --peak-tflops or set peak_tflops")
        verdict = "FITS" if self.fits else "DOES NOT FIT"
        lines.append(f"verdict      {verdict} ({self.total_bytes / GiB:.2f} GiB of {self.gpu_bytes / GiB:.1f} GiB)")
        if not self.fits:
            lines.append(f"to fit       {self.advice()}")
        lines += [f"warning      {w}" for w in self.warnings]
        return "\n".join(lines)

    def advice(self) -> str:
        """The smallest change along each axis that fits, as launch says it."""
        return "; or ".join(fit_advice(self)) or "no single change of micro_batch, seq_len or hosts fits; offload " \
            "or a larger GPU is needed"


def deepspeed_config_for(preset: str, recipe_path: Path | None, hosts: Path | None) -> dict:
    """`medtrain config deepspeed`: the JSON for a recipe on a hostfile, or the preset's defaults for one rank
    when they are not given."""

    if recipe_path is None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        return build_ds_config(preset=preset, precision=None, micro_batch=1, accumulation=1, world_size=1,
                               hidden_size=4096)
    pool = read_hostfile(hosts) if hosts else {"localhost": 1}
    return make_plan(load_recipe(recipe_path), pool, preset=preset).spec.ds_config


def fit_advice(plan: Plan) -> list[str]:
    """Each axis on its own: micro_batch halved (global batch kept, more accumulation), seq_len halved, hosts
    doubled (ZeRO-3 shards the states over more ranks), until the plan fits."""

    r, pool = plan.recipe, OrderedDict(plan_pool(plan))
    def halvings(start: int, above: int) -> list[int]:
        """start // 2, // 4, ... for as long as the value halved was above `above`."""
        return [start >> k for k in range(1, start.bit_length()) if start >> (k - 1) > above]

    grown = [OrderedDict((f"{h}+{i}", n) for i in range(2 ** k) for h, n in pool.items()) for k in range(1, 5)]
    axes = [
        [(f"micro_batch {m} (from {r.micro_batch})", replace(r, micro_batch=m), pool)
         for m in halvings(r.micro_batch, 1)],
        [(f"seq_len {s} (from {r.seq_len})", replace(r, seq_len=s), pool) for s in halvings(r.seq_len, 256)],
        [(f"{len(hosts)} hosts (from {len(pool)})", r, hosts) for hosts in grown],
    ]
    found = []
    for tries in axes:  # the first (smallest) change on each axis that fits
        for label, recipe, hosts in tries:
            try:
                candidate = make_plan(recipe, hosts, plan.hardware)
            except (RecipeError, ValueError, ZeroDivisionError):
                continue
            if candidate.fits:
                found.append(f"{label}: {candidate.total_bytes / GiB:.1f} GiB")
                break
    return found


def plan_pool(plan: Plan) -> dict[str, int]:
    per_host = plan.world_size // max(plan.hosts, 1)
    return {f"host{i}": per_host for i in range(plan.hosts)}


def data_size(recipe: Recipe) -> DataSize:
    """Prepared data when it exists (the reader's own count), else the recipe's expected_* figures."""
    manifest = Path(recipe.data) / "manifest.json"
    if manifest.is_file():

        samples, tokens, documents = count_samples(recipe.data, recipe.stage, recipe.seq_len, recipe.packing)
        return DataSize(samples, tokens, f"prepared: {recipe.data}", documents)
    if recipe.expected_samples <= 0:
        raise RecipeError(
            f"{recipe.source}: data '{recipe.data}' is not prepared yet and expected_samples is not set; "
            "run `medtrain prep` first or set expected_samples/expected_tokens in the recipe"
        )
    tokens = recipe.expected_tokens or recipe.expected_samples * recipe.seq_len
    return DataSize(recipe.expected_samples, tokens, "expected_* in recipe")


def model_state_bytes(n_params: int, largest: int, world: int, optimizer: str, precision: str) -> dict[str, float]:
    """ZeRO-3 model states per GPU, by component."""
    p = DTYPE_BYTES[precision]
    mixed = precision != "fp32"
    states = {
        f"params ({precision}, 1/{world})": p * n_params / world,
        f"grads ({precision}, 1/{world})": p * n_params / world,
    }
    if mixed:
        states["fp32 master weights (1/W)"] = 4 * n_params / world
    states["fp32 grads at the optimizer step (1/W)"] = 4 * n_params / world
    states[f"{optimizer} state, unfactored (1/W)"] = OPTIMIZER_STATE_BYTES[optimizer] * n_params / world
    states["largest gathered module (param + grad)"] = 2 * p * largest
    return states


def activation_bytes(shape: LlamaShape, micro_batch: int, seq_len: int, precision: str, checkpointing: bool,
                     attention: str) -> dict[str, float]:
    """Activations after Korthikanti et al. (2022): 34·s·b·h per layer, + 5·a·s²·b when scores materialise."""
    p = DTYPE_BYTES[precision] / 2  # the 34/5 coefficients are for 16-bit activations
    b, s, h, L, a = micro_batch, seq_len, shape.hidden_size, shape.num_hidden_layers, shape.num_attention_heads
    per_layer = (34 * s * b * h + (5 * a * s * s * b if attention == "eager" else 0)) * p
    out = {}
    if checkpointing:
        out["activation checkpoints (layer inputs)"] = L * b * s * h * DTYPE_BYTES[precision]
        out["one layer recomputed"] = per_layer
    else:
        out["activations (all layers)"] = L * per_layer
    # the logits and their gradient in the training dtype, and one chunk of the loss in fp32 (its upcast and its
    # softmax): the whole fp32 logits are never held (medtrain.train.loss.ChunkedCrossEntropy)
    chunk = min(b * s, LOSS_CHUNK_TOKENS)
    out["logits + grad, one fp32 loss chunk"] = (b * s * shape.vocab_size * 2 * DTYPE_BYTES[precision]
                                                 + chunk * shape.vocab_size * 4 * 2)
    return out


def make_plan(recipe: Recipe, pool: dict[str, int], hardware: Hardware | None = None,
              preset: str | None = None) -> Plan:
    hardware = hardware or Hardware()
    if hardware.peak_tflops <= 0:
        hardware = Hardware(**{**vars(hardware), "peak_tflops": recipe.peak})
    if hardware.gpu_mem_gb <= 0:
        mem = PRESETS[recipe.preset].gpu_mem_gb if recipe.preset in PRESETS else 32.0
        hardware = Hardware(**{**vars(hardware), "gpu_mem_gb": mem})
    world = sum(pool.values())
    vocab = _tokenizer_vocab(recipe)
    shape = resolve_shape(recipe.model, vocab_size=vocab)
    precision = recipe.precision
    if recipe.preset in PRESETS and precision not in PRESETS[recipe.preset].allowed:
        raise RecipeError(f"{recipe.source}: preset {recipe.preset} does not support precision {precision}")
    spec = RunSpec.compute(recipe, world, data_size(recipe), shape.hidden_size, preset)
    n = shape.num_params()
    memory = model_state_bytes(n, shape.largest_module_params(), world, recipe.optimizer, precision)
    memory.update(activation_bytes(shape, recipe.micro_batch, recipe.seq_len, precision,
                                   recipe.gradient_checkpointing, recipe.attn_implementation))
    memory["runtime reserve (context, comm buffers)"] = hardware.reserve_gb * GiB
    mean_len = min(recipe.seq_len, spec.data.tokens / max(spec.data.samples, 1))  # attention grows with it
    token_flops = flops_per_token(shape, mean_len, recipe.gradient_checkpointing)
    flops = token_flops.model * spec.data.tokens * recipe.epochs
    peak = hardware.peak_tflops * 1e12
    seconds = flops / (world * peak * hardware.mfu) if peak > 0 else 0.0
    return Plan(recipe=recipe, shape=shape, hosts=len(pool), spec=spec, memory=memory,
                gpu_bytes=hardware.gpu_mem_gb * GiB, token_flops=token_flops, flops=flops, seconds=seconds,
                hardware=hardware, warnings=plan_warnings(recipe, spec))


def plan_warnings(recipe: Recipe, spec: RunSpec) -> list[str]:
    found = []
    said = precision_warning(recipe.preset, recipe.precision)
    if said:
        found.append(said)
    expected, have = recipe.expected_samples, spec.data.samples
    if expected > 0 and spec.data.source.startswith("prepared") and not expected / 2 <= have <= expected * 2:
        found.append(f"the prepared data has {have:,} samples where the recipe expects {expected:,} "
                     f"(expected_samples): is {recipe.data} the whole data set? The steps and time above are for "
                     "what is prepared")
    if recipe.checkpoint_every and recipe.checkpoint_every >= spec.total_steps:
        found.append(f"checkpoint_every {recipe.checkpoint_every} is beyond this run's {spec.total_steps} steps: "
                     "nothing is saved before the end, so a failure restarts from step 0")
    return found


def _tokenizer_vocab(recipe: Recipe) -> int | None:
    """Named tiny configs take the vocabulary of the run's tokenizer (the manifest records it)."""
    manifest = Path(recipe.data) / "manifest.json"
    if manifest.is_file():

        return json.loads(manifest.read_text())["tokenizer"]["vocab_size"]
    return None
