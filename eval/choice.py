"""Multiple-choice scoring by log-probabilities, batched, under two named conventions.

original - the MMLU/CMMLU authors' scripts: the logit of each letter token ("A".."D", no leading space) at the
           last position of the prompt; the highest wins.
harness  - lm-evaluation-harness 0.4: log-likelihood of the continuation " A".." D" after the prompt, where the
           continuation's tokens are those of encode(context + continuation) past encode(context).
They pick different letters on weak models; results.json records which one produced a number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eval.model import input_device
from eval.shard import ONE, Shard

LETTERS = ("A", "B", "C", "D")


def letter_ids(tok) -> list[int]:
    return [tok(letter, add_special_tokens=False)["input_ids"][-1] for letter in LETTERS]


def _pad_right(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def score_original(model, tok, contexts: list[list[int]], batch_size: int,
                   shard: Shard = ONE) -> list[list[float]]:
    """Per prompt, the four letter logits at its last position."""
    targets = letter_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: dict[int, list[float]] = {}
    for k, b in enumerate(range(0, len(contexts), batch_size)):
        if not shard.takes(k):
            continue
        chunk = contexts[b:b + batch_size]
        ids, mask = _pad_right(chunk, pad)
        device = input_device(model)
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        last = torch.tensor([len(c) - 1 for c in chunk], device=logits.device)
        rows = logits[torch.arange(len(chunk), device=logits.device), last].float()[:, targets].cpu()
        out.update(zip(range(b, b + len(chunk)), rows.tolist(), strict=True))
    merged = shard.gather(out)
    return [merged[i] for i in range(len(contexts))]


def harness_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's _encode_pair: trailing spaces of the context move to the continuation, then split the tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


def score_harness(model, tok, requests: list[tuple[list[int], list[int]]], batch_size: int,
                  max_len: int, shard: Shard = ONE) -> list[float]:
    """Sum of log-probabilities of each continuation given its context (left-truncated to max_len)."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: dict[int, float] = {}
    for k, b in enumerate(range(0, len(requests), batch_size)):
        if not shard.takes(k):
            continue
        chunk = requests[b:b + batch_size]
        seqs = [(ctx + cont)[-(max_len + 1):][:-1] for ctx, cont in chunk]
        ids, mask = _pad_right(seqs, pad)
        device = input_device(model)
        with torch.no_grad():
            logp = F.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), dim=-1)
        for i, (_, cont) in enumerate(chunk):
            n = len(seqs[i])
            positions = torch.arange(n - len(cont), n, device=logp.device)
            out[b + i] = logp[i, positions, torch.tensor(cont, device=logp.device)].sum().item()
    merged = shard.gather(out)
    return [merged[i] for i in range(len(requests))]
