"""ZeRO-3 shards -> a Hugging Face directory: safetensors weights, config, generation config, tokenizer and
lineage (where the model came from)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from data_prep.format import publish
from data_prep.tokenizer import TOKENIZER_FILES
from medtrain.checkpoint import MARKER, CheckpointError, complete_checkpoints, read_state
from medtrain.modeling import DTYPES


def write_hf_dir(state_dict: dict[str, torch.Tensor], config_dir: Path, state: dict, out: Path,
                 lineage: dict) -> Path:
    """Write into a temporary sibling and rename, so a directory that exists is a complete model."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, GenerationConfig

    tmp = staging_dir(out)
    tmp.mkdir(parents=True)
    dtype = DTYPES[state["precision"]]
    tensors = {k: v.detach().to(dtype).contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    cfg = AutoConfig.from_pretrained(str(config_dir), local_files_only=True)
    cfg.use_cache = True
    cfg.dtype = dtype
    cfg.save_pretrained(str(tmp))
    GenerationConfig(bos_token_id=state.get("bos_id"), eos_token_id=state["eos_id"],
                     pad_token_id=state.get("pad_id") if state.get("pad_id") is not None else state["eos_id"],
                     do_sample=False).save_pretrained(str(tmp))
    return publish_model_dir(tmp, out, Path(state["tokenizer_dir"]), lineage)


def staging_dir(out: Path) -> Path:
    """An empty temporary sibling of `out` to build a model directory in."""
    tmp = Path(out).with_name(f".{Path(out).name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def publish_model_dir(tmp: Path, out: Path, tokenizer_dir: Path, lineage: dict) -> Path:
    """Add the tokenizer and lineage.json to a staged model directory and rename it into place (replacing an
    older one), so a model directory that exists is always complete."""
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, tmp / name)
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2, ensure_ascii=False) + "\n")
    return publish(tmp, Path(out), overwrite=True)


def lineage_for(state: dict) -> dict:
    """Base model (and its own lineage when it is one of ours), datasets, recipe, step, versions."""
    from medtrain.provenance import versions

    recipe = state["recipe"]
    base = recipe["model"]
    parent = Path(base) / "lineage.json"
    return {
        "base_model": base,
        "base_lineage": json.loads(parent.read_text()) if parent.is_file() else None,
        "stage": state["stage"],
        "template": state.get("template"),
        "datasets": [{"path": recipe["data"], "manifest_sha256": state["data_manifest_sha256"]}],
        "recipe": recipe,
        "step": state["step"],
        "continual_checkpoint_step": recipe.get("continual_step"),
        "versions": versions(),
    }


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or a run/checkpoints directory (its newest complete checkpoint)."""
    path = Path(path)
    if (path / MARKER).is_file():
        return path
    for root in (path, path / "checkpoints"):
        done = complete_checkpoints(root)
        if done:
            return done[-1]
    raise CheckpointError(f"{path}: no complete checkpoint (a step_* directory with a {MARKER} marker)")


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Offline export with DeepSpeed's zero_to_fp32 (fp32 masters), cast to the training dtype."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt = resolve_checkpoint(checkpoint)
    state = read_state(ckpt)
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(ckpt.parent), tag=ckpt.name)
    return write_hf_dir(state_dict, ckpt, state, out, lineage_for(state))
