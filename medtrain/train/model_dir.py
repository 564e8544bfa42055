"""Hugging Face model directories that medtrain writes: safetensors weights, config, generation config,
tokenizer and lineage (where the model came from), staged beside the target and renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medtrain.core.disk import disk_full_as_error, require_space
from medtrain.core.errors import UserError
from medtrain.core.model_specs import resolve_shape
from medtrain.core.provenance import continual_step_in, versions
from medtrain.core.publish import staged_dir
from medtrain.data_prep.samples import sample_lines
from medtrain.data_prep.tokenizer import Encoder, write_hf_tokenizer
from medtrain.train.modeling import DTYPES
from medtrain.train.state import TrainerState


def lineage_for(state: TrainerState) -> dict:
    """Base model (and its own lineage when it is one of ours), datasets, recipe, step, versions."""
    recipe = state.recipe
    base = recipe["model"]
    parent = Path(base) / "lineage.json"
    base_lineage = json.loads(parent.read_text()) if parent.is_file() else None
    continual = recipe.get("continual_step")
    if continual is None and state.stage == "sft":
        continual = continual_step_of(Path(base), base_lineage)
    if recipe.get("init") == "random":
        base = f"{base} (random init, seed {recipe['seed']})"
    return {
        "base_model": base,
        "base_source": ((recipe.get("extra") or {}).get("hub") or {}).get("model"),
        "base_lineage": base_lineage,
        "stage": state.stage,
        "template": state.template,
        "datasets": [{"path": recipe["data"], "manifest_sha256": state.data_manifest_sha256}],
        "recipe": recipe,
        "step": state.step,
        "continual_checkpoint_step": continual,
        "versions": versions(),
    }


def continual_step_of(base: Path, base_lineage: dict | None) -> int | None:
    """The continual-pretraining step an SFT run starts from, whether or not a sweep started it: the base's own
    lineage (an export of a continual run), or the trainer state of a continual checkpoint; None for a model
    that is not one of our continual runs (a hub model: step 0 of the paper's tables)."""
    step = continual_step_in(base_lineage)
    if step is not None:
        return step
    if (base / "trainer_state.json").is_file():
        try:
            state = TrainerState.read(base)
        except UserError:
            return None
        return state.step if state.stage == "continual" else None
    return None


def write_hf_dir(state_dict: dict[str, torch.Tensor], config_dir: Path, state: TrainerState, out: Path) -> Path:
    """Weights in the training dtype as safetensors, with the checkpoint's config and the run's lineage."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, GenerationConfig

    dtype = DTYPES[state.precision]
    needed = sum(v.numel() for v in state_dict.values()) * dtype.itemsize
    require_space(Path(out).parent, needed, "this model's weights")
    with disk_full_as_error(Path(out), needed), staged_dir(Path(out), kind="model") as tmp:
        tensors = {k: v.detach().to(dtype).contiguous().clone() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = AutoConfig.from_pretrained(str(config_dir), local_files_only=True)
        cfg.use_cache = True
        cfg.dtype = dtype
        cfg.save_pretrained(str(tmp))
        GenerationConfig(bos_token_id=state.bos_id, eos_token_id=state.eos_id, pad_token_id=state.pad_or_eos,
                         do_sample=False).save_pretrained(str(tmp))
        complete_model_dir(tmp, Path(state.tokenizer_dir), lineage_for(state))
    return Path(out)


def complete_model_dir(tmp: Path, tokenizer_dir: Path, lineage: dict) -> None:
    """Add the tokenizer and lineage.json to a staged model directory (published by the caller's staged_dir,
    replacing an older one), so a model directory that exists is always complete."""
    check = write_hf_tokenizer(tokenizer_dir, tmp, lines=sample_lines())
    # what the model was trained with, from the tokenizer itself (eval refuses a copy that lost its BOS)
    lineage = {**lineage, "tokenizer": {"path": str(tokenizer_dir), "bos_id": check["bos_id"],
                                        "bos_first": check["bos_first"], "export_check": check}}
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2, ensure_ascii=False) + "\n")


def init_model_dir(name: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A randomly initialised Llama of a named shape, saved as a Hugging Face directory with its tokenizer:
    the "base model" of the demo and of tests (nothing can be downloaded here)."""
    from transformers import LlamaConfig, LlamaForCausalLM


    info = Encoder(tokenizer_dir).info
    shape = resolve_shape(name, vocab_size=info.vocab_size)
    cfg = LlamaConfig(**shape.to_hf_config(), bos_token_id=info.bos_id, eos_token_id=info.eos_id,
                      pad_token_id=info.pad_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    lineage = {"base_model": f"{name} (random init, seed {seed})", "stage": "init", "step": 0, "base_lineage": None}
    with staged_dir(Path(out), kind="model") as tmp:
        model.save_pretrained(str(tmp))
        complete_model_dir(tmp, Path(tokenizer_dir), lineage)
    return Path(out)

