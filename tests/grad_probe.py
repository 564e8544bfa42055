"""Run on two ranks by tests/system/test_loss_reduction.py: one optimizer step of a tiny Llama under the real
ZeRO-3 engine, through the trainer's own accumulate(), with micro-batches of very unequal labelled-token counts
on each rank; SGD at lr 1 without clipping, so the weights move by exactly the step's gradient. Rank 0 compares
that with one plain backward over the concatenation of every rank's micro-batches and writes what it found.

With the token reduction the same launch also checks `packing: documents`: a step over rows of packed documents
(continual, and SFT examples with prompts) on the documents' attention against one plain backward over the same
documents one per sample, padded, on SDPA."""

import copy
import json
import sys

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from medtrain.core.ds_config import build_ds_config
from medtrain.core.rank import export_rank_env
from medtrain.data_prep.reader import Sample, pack_rows
from medtrain.train.attention import DOCUMENTS
from medtrain.train.batches import IGNORE, collate, collate_rows
from medtrain.train.loss import labelled, token_loss, token_loss_sum
from medtrain.train.trainer import accumulate, step_agreement

ACCUMULATION, MICRO, SEQ, VOCAB = 2, 2, 24, 64
KEEP = {0: [[1, 2], [22, 20]], 1: [[10, 11], [22, 22]]}  # labelled targets per row: 3, 42, 21, 44 per micro-batch


def batches_of(rank: int) -> list[dict[str, torch.Tensor]]:
    """Rank r's micro-batches: the same on every rank that builds them; labelled spans of 2 to 23 tokens."""
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for m in range(ACCUMULATION):
        ids = torch.randint(3, VOCAB, (MICRO, SEQ), generator=g)
        labels = ids.clone()
        keep = KEEP[rank % 2][m]  # very unequal across micro-batches and ranks
        for row, n in enumerate(keep):
            labels[row, : SEQ - n - 1] = IGNORE  # a prompt: only the last n+1 positions carry (n targets)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def main(out_path: str, reduction: str) -> None:
    export_rank_env()
    deepspeed.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ)
    model = LlamaForCausalLM(cfg)
    reference = copy.deepcopy(model)
    ds_config = build_ds_config(preset="cpu-zero3", precision="fp32", micro_batch=MICRO, accumulation=ACCUMULATION,
                                world_size=world, hidden_size=32, max_grad_norm=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                                      config=ds_config)
    batches = batches_of(rank)
    loss, labels = accumulate(engine, batches, reduction, world, step_agreement(batches, engine.device)[0])
    sums = torch.tensor([loss, float(labels)], dtype=torch.float64)
    dist.all_reduce(sums)
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        moved = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    if rank == 0:
        every = [b for r in range(world) for b in batches_of(r)]
        if reduction == "token":
            want = sum(token_loss_sum(reference(input_ids=b["input_ids"]).logits, b["labels"]) for b in every)
            want = want / sum(labelled(b["labels"]) for b in every)
            logged = sums[0].item() / sums[1].item()
        else:
            want = sum(token_loss(reference(input_ids=b["input_ids"]).logits, b["labels"]) for b in every) / len(every)
            logged = sums[0].item() / world
        want.backward()
        start = dict(reference.named_parameters())
        diff = max((start[n].detach() - moved[n] - start[n].grad).abs().max().item() for n in moved)
        scale = max(start[n].grad.abs().max().item() for n in moved)
        other = "micro_batch" if reduction == "token" else "token"
        json.dump({"reduction": reduction, "max_abs_diff": diff,
                   "other_reduction_loss": _loss(reference, every, other), "max_abs_grad": scale, "logged_loss": logged,
                   "reference_loss": want.item(), "labelled": [labelled(b["labels"]) for b in every]},
                  open(out_path, "w"))
    if reduction == "token":
        packed = {kind: packed_step(kind, rank, world) for kind in ("continual", "sft")}
        if rank == 0:
            found = json.load(open(out_path))
            json.dump({**found, "packed": packed}, open(out_path, "w"))
    dist.barrier()
    dist.destroy_process_group()


def documents(kind: str, rank: int) -> list[Sample]:
    """Rank r's documents, 3 to 17 tokens (SFT: with prompts of 1 to 6 tokens)."""
    g = torch.Generator().manual_seed(200 + rank)
    docs = []
    for _ in range(9):
        n = int(torch.randint(3, 18, (1,), generator=g))
        ids = torch.randint(3, VOCAB, (n,), generator=g).numpy()
        prompt = int(torch.randint(1, min(n, 7), (1,), generator=g)) if kind == "sft" else 0
        docs.append(Sample(ids, prompt))
    return docs


def rows_of(docs: list[Sample], kind: str) -> list[Sample]:
    """The documents packed into SEQ-token rows as data_prep.reader.DocumentRows packs them."""
    bounds = pack_rows(np.array([len(d.input_ids) for d in docs]), SEQ)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = docs[a:b]
        out.append(Sample(np.concatenate([d.input_ids for d in part]), doc_lens=np.array([len(d.input_ids)
                                                                                          for d in part]),
                          prompt_lens=np.array([d.prompt_len for d in part]) if kind == "sft" else None))
    return out


def unpacked(docs: list[Sample]) -> dict[str, torch.Tensor]:
    """The documents one per sample, padded: what `packing: per_document` (or SFT) trains on."""
    return collate(docs, np.arange(len(docs)), pad_id=0)


def packed_step(kind: str, rank: int, world: int) -> dict:
    """One step over packed rows (two micro-batches of rows per rank) against the unpacked reference."""
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ)
    model = LlamaForCausalLM(cfg)
    reference = copy.deepcopy(model)
    model.set_attn_implementation(DOCUMENTS)
    rows = rows_of(documents(kind, rank), kind)
    half = (len(rows) + 1) // 2
    batches = [collate_rows(rows[:half], 0), collate_rows(rows[half:], 0)]
    ds_config = build_ds_config(preset="cpu-zero3", precision="fp32", micro_batch=half, accumulation=2,
                                world_size=world, hidden_size=32, max_grad_norm=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                                      config=ds_config)
    loss, labels = accumulate(engine, batches, "token", world, step_agreement(batches, engine.device)[0])
    sums = torch.tensor([loss, float(labels)], dtype=torch.float64)
    dist.all_reduce(sums)
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        moved = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    if rank != 0:
        return {}
    every = [unpacked(documents(kind, r)) for r in range(world)]
    mask = [b["attention_mask"] for b in every]
    want = sum(token_loss_sum(reference(input_ids=b["input_ids"], attention_mask=m).logits, b["labels"])
               for b, m in zip(every, mask, strict=True)) / sum(labelled(b["labels"]) for b in every)
    want.backward()
    start = dict(reference.named_parameters())
    return {"rows": len(rows), "documents": 9, "logged_loss": sums[0].item() / sums[1].item(),
            "reference_loss": want.item(), "labelled": int(sums[1].item()),
            "reference_labelled": sum(labelled(b["labels"]) for b in every),
            "max_abs_diff": max((start[n].detach() - moved[n] - start[n].grad).abs().max().item() for n in moved),
            "max_abs_grad": max(start[n].grad.abs().max().item() for n in moved)}


def _loss(model, every: list[dict], reduction: str) -> float:
    with torch.no_grad():
        if reduction == "token":
            return (sum(token_loss_sum(model(input_ids=b["input_ids"]).logits, b["labels"]) for b in every)
                    / sum(labelled(b["labels"]) for b in every)).item()
        means = [token_loss(model(input_ids=b["input_ids"]).logits, b["labels"]) for b in every]
        return (sum(means) / len(every)).item()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
