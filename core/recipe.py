"""Run recipes: one YAML file maps 1:1 onto `Recipe`; unknown keys, wrong types and missing fields are errors.

A recipe is what a cluster slot is spent on, so every check that can run on a laptop runs here, before launch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from medtrain.core import hub
from medtrain.core.ds_config import PRESETS
from medtrain.core.errors import UserError
from medtrain.core.model_specs import NAMED
from medtrain.core.schema import from_mapping, read_yaml, unknown_keys

Tracker = Literal["tensorboard", "mlflow", "wandb", "swanlab"]


class RecipeError(UserError):
    """A recipe the user can fix; the message names the file and the key."""


AUTO_VAL = "auto"
Stage = Literal["continual", "sft"]
Precision = Literal["fp16", "bf16", "fp32"]
Packing = Literal["packed", "per_document", "documents"]
Optimizer = Literal["adafactor", "adamw"]
LossReduction = Literal["token", "micro_batch"]
LrSchedule = Literal["linear", "cosine", "constant"]


@dataclass
class Recipe:
    stage: Stage
    """continual (causal LM on raw text) or sft (prompt masked from the loss)."""
    model: str
    """A Hugging Face model directory (its weights are trained), or a named shape from core.model_specs (e.g.
    llama2-13b, tiny): a shape has no weights, so training from it needs `init: random`."""
    data: str
    """A dataset directory written by `medtrain prep` (use `prep mix` to combine several)."""
    output_dir: str
    """Where checkpoints, metrics.jsonl, TensorBoard events and the exported model go."""
    tokenizer: str | None = None
    """Tokenizer directory; defaults to the model directory. Must be the one the data was prepared with."""
    seq_len: int = 4096
    """Longest training sequence in tokens (packed block size for continual)."""
    global_batch: int = 120
    """Samples per optimizer step over all ranks: micro_batch x accumulation x world size."""
    micro_batch: int = 1
    """Samples per rank per forward pass."""
    lr: float = 2e-5
    """Peak learning rate after warmup."""
    epochs: int = 1
    warmup_ratio: float = 0.03
    """Warmup steps = ceil(warmup_ratio x total steps), then `lr_schedule` to 0."""
    lr_schedule: LrSchedule = "linear"
    """After warmup: linear decay to 0 (the HF Trainer's default, the paper's), cosine to 0, or constant."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping); the HF Trainer's default, as the paper used."""
    loss_reduction: LossReduction = "token"
    """token: the step's loss is the sum over every labelled token of the global batch (all micro-batches, all
    ranks) over their count, so a 3-token answer weighs 3 tokens, not as much as a 4,000-token one (torchtune,
    torchtitan, transformers >= 4.46). micro_batch: each micro-batch's mean, averaged (transformers < 4.46, the
    paper's Trainer)."""
    weight_decay: float = 0.0
    """Decoupled weight decay on matrices and embeddings; norms and biases are spared (the HF Trainer's split)."""
    precision: Precision = "fp16"
    preset: str = "v100-zero3-fp16"
    """DeepSpeed preset (medtrain config deepspeed --help lists them)."""
    optimizer: Optimizer = "adafactor"
    """adafactor: HF Adafactor as `--optim adafactor` (scale_parameter/relative_step/warmup_init off)."""
    gradient_checkpointing: bool = True
    packing: Packing = "packed"
    """packed: seq_len blocks of the token stream (continual; documents attend across their boundaries).
    per_document: one document per sample, padded to its micro-batch's longest (the paper's ~3,000 steps).
    documents: several whole documents per seq_len row (continual and SFT), positions restarting and attention
    kept inside each; global_batch then counts rows."""
    checkpoint_every: int = 0
    """Save a checkpoint every N optimizer steps (0: only at the end)."""
    val_data: str | None = "auto"
    """A prepared held-out dataset (`medtrain prep ... --val-fraction F` writes DATA/val): its token-weighted loss,
    over the whole split sharded over the ranks, is logged every `eval_every` steps and at the end. auto: DATA/val
    when prep wrote one, else none; null: no validation."""
    eval_every: int = 0
    """Validation every N optimizer steps (0 with val_data: at the end only)."""
    keep_checkpoints: int = 3
    """Keep the newest K checkpoints (0 keeps all)."""
    log_every: int = 1
    seed: int = 42
    max_steps: int = 0
    """Stop after N steps (0: run all epochs). For smoke runs and staged runs: the lr schedule (warmup, decay) still
    spans the full run, so a smoke run trains the real schedule's first steps."""
    loss_scale_patience: int = 20
    """fp16: stop when the loss scale sits at its minimum for this many consecutive steps."""
    expected_samples: int = 0
    """Samples per epoch that `plan` assumes when the data is not prepared yet (Huatuo encyclopedia: 364,420)."""
    expected_tokens: int = 0
    """Tokens per epoch that `plan` assumes when the data is not prepared yet (the paper: ~1B)."""
    init: Literal["pretrained", "random"] | None = None
    """Where the weights come from: pretrained (the model directory's; the default for directories) or random
    (a named shape initialised from `seed`). A named shape without `init: random` can be planned, not trained."""
    continual_step: int | None = None
    """Lineage: the continual-pretraining checkpoint step this run starts from (sft after continual)."""
    peak_tflops: float = 0.0
    """Dense peak TFLOP/s per GPU for MFU/HFU (0: the preset's, e.g. V100 fp16 125, A100 bf16 312, H100 989)."""
    attn_implementation: str = "sdpa"
    hang_timeout: float = 600.0
    """Seconds without a step on some rank before `medtrain launch` calls the run hung: it collects every rank's
    stacks under RUN_DIR/hangs/, ends the job on every node, and restarts it if max_restarts allows (0: off)."""
    setup_timeout: float = 1800.0
    """The allowance before the first step (process start, joining the group, loading data and weights)."""
    save_timeout: float = 1800.0
    """The allowance for one checkpoint save or the final export."""
    max_restarts: int = 0
    """Relaunch a failed or hung run from its newest verified checkpoint up to this many times."""
    report_to: list[Tracker] = field(default_factory=lambda: ["tensorboard"])
    """Where rank 0's metrics go besides metrics.jsonl: tensorboard, mlflow, wandb, swanlab (each configured by its
    own environment variables; `--set report_to=tensorboard,mlflow`). A tracker not installed or not reachable is
    a warning, and training goes on."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes carried into lineage; never read by the trainer."""

    source: str = field(default="<memory>", repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self.source
        problems = []
        positive = ("seq_len", "global_batch", "micro_batch", "epochs", "log_every", "loss_scale_patience")
        for name in positive:
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        for name in ("checkpoint_every", "keep_checkpoints", "max_steps", "expected_samples", "expected_tokens",
                     "peak_tflops", "hang_timeout", "setup_timeout", "save_timeout", "max_restarts"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if not (0.0 <= self.warmup_ratio < 1.0):
            problems.append(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr={self.lr} must be a positive number")
        named = self.model in NAMED
        if self.init == "random" and not named:
            problems.append(f"init: random builds a named shape ({', '.join(NAMED)}), but model '{self.model}' is a "
                            "directory whose weights are loaded; set init: pretrained (or drop init)")
        if self.init == "pretrained" and named:
            problems.append(self._no_weights())
        if problems:
            raise RecipeError(f"{where}: " + "; ".join(problems))

    @property
    def weights(self) -> str:
        """Which weights a run of this recipe starts from, in words (plan, --dry-run, --check, banner)."""
        if self.model not in NAMED:
            origin = self.extra.get("hub", {}).get("model")
            if origin:
                return f"pretrained weights from {hub.source_label(origin)} ({self.model})"
            if hub.is_hub_id(self.model):
                return (f"pretrained weights from the Hugging Face id {self.model} (not in the cache yet: the "
                        f"launch downloads it, or `{hub.fetch_command(self.model)}` first)")
            return f"pretrained weights from {self.model}"
        if self.init == "random":
            return f"random initialisation of the named shape {self.model} (seed {self.seed})"
        return (f"NONE: '{self.model}' is a named shape (it sizes the plan); to train, point model at the weights' "
                "directory or set init: random")

    def check_trainable(self) -> None:
        """A run must start from weights the user chose: a bare named shape is refused before any rank starts."""
        if self.model in NAMED and self.init != "random":
            raise RecipeError(f"{self.source}: {self._no_weights()}")

    def _no_weights(self) -> str:
        return (f"model '{self.model}' is a named shape with no weights; point model at a Hugging Face directory "
                "(e.g. your Llama-2-13b-hf) or set init: random to train from random initialisation")

    @property
    def peak(self) -> float:
        """Peak TFLOP/s per GPU: the recipe's, else the preset's (0 when neither knows)."""
        return self.peak_tflops or (PRESETS[self.preset].peak_tflops if self.preset in PRESETS else 0.0)

    @property
    def tokenizer_dir(self) -> str:
        return self.tokenizer or self.model

    def resolved(self, download: bool = True, missing_ok: bool = False) -> Recipe:
        """This recipe with hub ids replaced by the local snapshot folders every rank reads (cache first, then a
        download), and the ids and commits they came from kept in `extra.hub` for lineage. `missing_ok` keeps an
        id that cannot be resolved as it is (a dry run shows it; the launch resolves it)."""
        origins = dict(self.extra.get("hub", {}))
        changes: dict[str, str] = {}
        for key, ref in (("model", self.model), ("tokenizer", self.tokenizer)):
            if ref is None or (key == "model" and ref in NAMED):
                continue
            resolve = hub.resolve_model if key == "model" else hub.resolve_tokenizer
            try:
                r = resolve(ref, what=f"{self.source}: {key}", download=download)
            except hub.HubError:
                if missing_ok:
                    continue
                raise
            if r.hub_id is not None:
                origins[key] = r.provenance()
                changes[key] = str(r.path)
        if not changes:
            return self
        return dataclasses.replace(self, **changes, extra={**self.extra, "hub": origins})

    @property
    def wants_gpu(self) -> bool:
        """The preset's ranks each need a GPU (what every rank and preflight check the torch build against)."""
        return self.preset in PRESETS and PRESETS[self.preset].gpu

    def with_validation(self) -> Recipe:
        """`val_data: auto` made concrete: the split prep held out beside the data (DATA/val), else none."""
        if self.val_data != AUTO_VAL:
            return self
        held_out = Path(self.data) / "val"
        return dataclasses.replace(self, val_data=str(held_out) if (held_out / "manifest.json").is_file() else None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


def recipe_from_dict(raw: dict[str, Any], source: str = "<memory>") -> Recipe:
    """Build a Recipe, reporting every unknown key, missing field and wrong type at once."""
    return from_mapping(Recipe, raw, source, RecipeError, what="recipe", skip=("source",),
                        extra={"source": source})


def builtin_recipes() -> dict[str, Path]:
    """The recipes shipped in the wheel by name ('paper/continual_llama2_13b' -> its file)."""
    root = Path(str(resources.files("medtrain.recipes")))
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def builtin_recipe(name: str) -> Path | None:
    """A built-in recipe's file by name, with or without .yaml (and the checkout's recipes/ prefix)."""
    return builtin_recipes().get(name.removesuffix(".yaml").removeprefix("recipes/"))


def recipe_summary(path: Path) -> str:
    """A recipe file's first comment line that is not a command (what `medtrain recipes` lists it by)."""
    return next((line.lstrip("# ").strip() for line in path.read_text(encoding="utf-8").splitlines()
                 if line.startswith("#") and "medtrain " not in line), "")


def find_recipe(ref: str | Path) -> Path:
    """A recipe file by path, or a built-in one by name (with or without .yaml); a path that exists wins."""
    path = Path(ref)
    if path.is_file():
        return path
    found = builtin_recipe(str(ref))
    if found is None:
        raise RecipeError(f"{ref}: no such recipe file, nor a built-in recipe ({', '.join(builtin_recipes())}; "
                          "`medtrain recipes` lists them)")
    return found


def load_recipe(path: str | Path, overrides: list[str] | None = None, settings: dict[str, Any] | None = None
                ) -> Recipe:
    """Read a recipe YAML (a path or a built-in name); `key=value` overrides (`--set`) and typed `settings` (a
    command's own flags, None meaning not given) land on the same fields and are checked the same way."""
    path = find_recipe(path)
    raw = read_yaml(path, RecipeError, "no such recipe file") or {}
    known = [f.name for f in dataclasses.fields(Recipe) if f.name != "source"]
    unknown = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {item!r} must look like key=value")
        if key.strip() not in known:
            unknown.append(key.strip())
        elif isinstance(raw, dict):
            raw[key.strip()] = yaml.safe_load(value)
    if unknown:  # the override's fault, not the file's: say so
        raise RecipeError("; ".join(unknown_keys(unknown, known, where="--set: ")))
    if isinstance(raw, dict):
        raw.update({k: v for k, v in (settings or {}).items() if v is not None})
    return recipe_from_dict(raw, source=str(path))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)
