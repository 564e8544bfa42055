"""Multiple-choice scoring by log-probabilities, batched, under two named conventions.

original - the MMLU/CMMLU authors' scripts: the logit of each letter token ("A".."D", no leading space) at the
           last position of the prompt; the highest wins.
harness  - lm-evaluation-harness 0.4: log-likelihood of the continuation " A".." D" after the prompt, where the
           continuation's tokens are those of encode(context + continuation) past encode(context).
They pick different letters on weak models; results.json records which one produced a number.

Both encode as their reference does: with the tokenizer's own special tokens (Llama-2's tokenizer puts BOS first,
a bare BPE puts nothing), unless the text already starts with the BOS string. Leaving BOS out moves a Llama-2
model's log-likelihoods by up to 0.07 and changes about a third of its choices.

Speed: the four choices of a question share one input row whenever their continuations are one token (" A" is
one token for Llama-2), as lm-eval's cache shares them, and only the positions being scored go through the
output layer (`logits_to_keep`, left padding), so a 32,000-word vocabulary costs one row of logits per
question, not one per token of a 700-token 5-shot prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from medtrain.eval.encoding import encode
from medtrain.eval.model import input_device, left_pad
from medtrain.eval.shard import ONE, Shard

LETTERS = ("A", "B", "C", "D")


def adds_bos(tok) -> bool:
    """Whether the tokenizer's own rule puts BOS before a prompt (recorded beside every score)."""
    ids = tok("A", add_special_tokens=True)["input_ids"]
    return tok.bos_token_id is not None and bool(ids) and ids[0] == tok.bos_token_id


def letter_ids(tok, letters: tuple[str, ...] = LETTERS) -> list[int]:
    return [tok(letter, add_special_tokens=False)["input_ids"][-1] for letter in letters]


def harness_pairs(tok, context: str, continuations: list[str]) -> list[tuple[list[int], list[int]]]:
    """lm-eval's _encode_pair for each continuation of one context, the context encoded once: trailing spaces
    of the context move to the continuation, then the tokens of encode(context + continuation) are split."""
    n_spaces = len(context) - len(context.rstrip())
    moved, context = context[len(context) - n_spaces:], context[:len(context) - n_spaces]
    ctx = encode(tok, context)
    return [(ctx, encode(tok, context + moved + c)[len(ctx):]) for c in continuations]


def last_logits(model, rows: list[list[int]], keep: int, pad: int) -> torch.Tensor:
    """fp32 logits of the last `keep` positions of each row: [rows, keep, vocab]. Rows are left-padded so
    their last positions line up, with position ids counted from each row's first real token."""
    ids, mask = left_pad(rows, pad)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    device = input_device(model)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device),
              "use_cache": False}
    with torch.no_grad():
        try:
            logits = model(**inputs, logits_to_keep=keep).logits
        except TypeError as e:  # remote-code or older models without `logits_to_keep`: every position's logits
            if "logits_to_keep" not in str(e):
                raise
            logits = model(**inputs).logits
    return logits[:, -keep:].float()


def _score_rows(model, tok, rows: list[list[int]], keeps: list[int], batch_size: int, shard: Shard,
                reduce: Callable[[int, torch.Tensor], Any]) -> list[Any]:
    """reduce(i, logits of row i's last keeps[i] positions) for every row, longest rows first so a batch pads
    little; batch k is rank k mod W's, and the results are gathered in row order on every rank."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out: dict[int, Any] = {}
    for k, b in enumerate(range(0, len(order), batch_size)):
        if not shard.takes(k):
            continue
        idx = order[b:b + batch_size]
        keep = max(keeps[i] for i in idx)
        logits = last_logits(model, [rows[i] for i in idx], keep, pad)
        for row, i in enumerate(idx):
            out[i] = reduce(i, logits[row, keep - keeps[i]:])
    merged = shard.gather(out)
    return [merged[i] for i in range(len(rows))]


def score_original(model, tok, contexts: list[list[int]], batch_size: int, shard: Shard = ONE,
                   letters: list[tuple[str, ...]] | None = None) -> list[list[float]]:
    """Per prompt, the logits of its options' letters (A-D unless `letters` says otherwise, e.g. MedQA's five)
    at its last position."""
    targets = [letter_ids(tok, ls) for ls in (letters or [LETTERS] * len(contexts))]
    return _score_rows(model, tok, contexts, [1] * len(contexts), batch_size, shard,
                       lambda i, logits: logits[-1, targets[i]].cpu().tolist())


def score_harness(model, tok, requests: list[tuple[list[int], list[int]]], batch_size: int,
                  max_len: int, shard: Shard = ONE) -> list[float]:
    """Sum of log-probabilities of each continuation given its context (left-truncated to max_len + 1 tokens
    of context and continuation, as lm-eval does). Requests with the same input row share one forward pass."""
    rows: dict[tuple[int, ...], int] = {}
    users: list[list[int]] = []
    for r, (ctx, cont) in enumerate(requests):
        key = tuple((ctx + cont)[-(max_len + 1):][:-1])
        if key not in rows:
            rows[key] = len(users)
            users.append([])
        users[rows[key]].append(r)
    keeps = [max(len(requests[r][1]) for r in rs) for rs in users]

    def reduce(i: int, logits: torch.Tensor) -> list[float]:
        logp = F.log_softmax(logits, dim=-1)
        sums = []
        for r in users[i]:
            cont = requests[r][1]
            picked = logp[len(logp) - len(cont):].gather(1, torch.tensor(cont, device=logp.device)[:, None])
            sums.append(picked.sum().item())
        return sums

    per_row = _score_rows(model, tok, [list(k) for k in rows], keeps, batch_size, shard, reduce)
    scores: list[float] = [0.0] * len(requests)
    for rs, values in zip(users, per_row, strict=True):
        for r, v in zip(rs, values, strict=True):
            scores[r] = v
    return scores
