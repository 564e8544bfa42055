"""The model on the DeepSpeed engine: built from a named config or loaded from a Hugging Face directory,
straight into ZeRO-3 partitions so a 13B model never materialises whole on one rank."""

from __future__ import annotations

from pathlib import Path

import torch

from medtrain.core.model_specs import NAMED, ModelSpecError, resolve_shape

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def hf_config(model: str, vocab_size: int, attn: str = "sdpa"):
    from transformers import AutoConfig, LlamaConfig

    if model in NAMED:
        cfg = LlamaConfig(**resolve_shape(model, vocab_size=vocab_size).to_hf_config())
    else:
        cfg = AutoConfig.from_pretrained(model, local_files_only=True)
    cfg.use_cache = False
    cfg._attn_implementation = attn
    return cfg


def build_model(model: str, cfg, vocab_size: int, ds_config: dict, precision: str, seed: int,
                gradient_checkpointing: bool = True) -> torch.nn.Module:
    """Named configs are initialised under zero.Init (same seed on every rank); directories load into shards.
    `cfg` is the run's hf_config (the trainer also sizes the DeepSpeed buckets and checkpoints from it)."""
    import deepspeed
    from transformers import AutoModelForCausalLM, LlamaForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    torch.manual_seed(seed)
    if cfg.vocab_size < vocab_size:
        raise ModelSpecError(f"model {model} has {cfg.vocab_size} embeddings, fewer than the data's vocabulary "
                         f"({vocab_size}): prepare the data with the model's tokenizer")
    if model in NAMED:
        # dtype comes from the config: DeepSpeed 0.19 ignores an explicit dtype= when the accelerator lacks fp16
        # (`dtype or fp16 if ... else bf16` binds as `(dtype or fp16) if ...`) and would build fp32 runs in bf16
        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            net = LlamaForCausalLM(cfg)
    else:
        keep = HfDeepSpeedConfig(ds_config)  # noqa: F841 — from_pretrained reads it to load into partitions
        net = AutoModelForCausalLM.from_pretrained(model, config=cfg, local_files_only=True,
                                                   dtype=DTYPES[precision])
    _rebuild_rotary(net, cfg)
    if gradient_checkpointing:
        if hasattr(net, "activation_checkpointing_enable"):  # transformers 5 name
            net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return net


def _rebuild_rotary(net: torch.nn.Module, cfg) -> None:
    """zero.Init casts the RoPE `inv_freq` buffers to bf16 (seen with DeepSpeed 0.19 on CPU), which moves every
    position's angle and makes the trained model disagree with its own export; rebuild them in fp32."""
    inner = getattr(net, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is not None and getattr(rotary, "inv_freq", None) is not None and rotary.inv_freq.dtype != torch.float32:
        inner.rotary_emb = type(rotary)(config=cfg)


def release_hf_deepspeed_config() -> None:
    """A later from_pretrained on one rank hangs if the global HfDeepSpeedConfig outlives initialize."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def save_hf_config(cfg, out: Path, precision: str) -> None:
    cfg = cfg.__class__.from_dict(cfg.to_dict())
    cfg.use_cache = True
    cfg.dtype = DTYPES[precision]
    cfg.save_pretrained(str(out))
