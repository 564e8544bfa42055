"""Loading a Hugging Face model directory for evaluation (weights as stored, no remote code)."""

from __future__ import annotations

import os
from pathlib import Path

from eval.task import TaskError


def load_model(model_dir: Path, trust_remote_code: bool = False):
    """(model, tokenizer) in eval mode; a directory that is not a model is a TaskError, not a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TaskError(f"{model_dir}: not a Hugging Face model directory (no config.json); pass an exported "
                        "model, e.g. runs/NAME/export")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True,
                                            trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TaskError(f"{model_dir}: cannot load model or tokenizer ({e})") from None
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def context_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048))
