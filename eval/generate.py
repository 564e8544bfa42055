"""Batched greedy generation: prompts sorted by length, left padding, the KV cache, and a batch that stops as
soon as every row has emitted EOS (Hugging Face generate does the last two)."""

from __future__ import annotations

import sys
import time

import torch
from tqdm import tqdm

from medtrain.eval.encoding import encode
from medtrain.eval.model import input_device, left_pad
from medtrain.eval.shard import ONE, Shard


def generate(model, tok, prompts: list[str], *, batch_size: int = 16, max_new_tokens: int = 256,
             add_bos: bool = True, progress: bool = True, shard: Shard = ONE) -> list[str]:
    """Greedy continuations of `prompts`, in input order. Under a shard each rank generates its batches and the
    outputs are gathered, so every rank returns all of them."""
    encoded = encode_prompts(tok, prompts, add_bos)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    outputs: dict[int, str] = {}
    bar = tqdm(total=len(prompts), unit="q", desc="generate", file=sys.stderr,
               disable=not progress or not shard.is_main, mininterval=0.5 if sys.stderr.isatty() else 10.0)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    start = time.perf_counter()
    for k, b in enumerate(range(0, len(order), batch_size)):
        if not shard.takes(k):
            continue
        idx = order[b:b + batch_size]
        ids, mask = left_pad([encoded[i] for i in idx], pad)
        width = ids.shape[1]
        with torch.no_grad():
            device = input_device(model)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, pad_token_id=pad, eos_token_id=tok.eos_token_id, use_cache=True)
        for row, i in enumerate(idx):
            outputs[i] = tok.decode(out[row, width:].tolist(), skip_special_tokens=True)
        bar.update(len(idx) * shard.world)
        bar.set_postfix_str(f"{bar.n / (time.perf_counter() - start):.2f} q/s", refresh=False)
    bar.close()
    merged = shard.gather(outputs)
    return [merged[i] for i in range(len(prompts))]


def encode_prompts(tok, prompts: list[str], add_bos: bool = True) -> list[list[int]]:
    return [encode(tok, p, bos=add_bos) for p in prompts]
