"""Run on two ranks by tests/system/test_loss_reduction.py: one optimizer step of a tiny Llama under the real
ZeRO-3 engine, through the trainer's own accumulate(), with micro-batches of very unequal labelled-token counts
on each rank; SGD at lr 1 without clipping, so the weights move by exactly the step's gradient. Rank 0 compares
that with one plain backward over the concatenation of every rank's micro-batches and writes what it found."""

import copy
import json
import sys

import deepspeed
import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from medtrain.core.ds_config import build_ds_config
from medtrain.core.rank import export_rank_env
from medtrain.train.batches import IGNORE
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
    dist.barrier()
    dist.destroy_process_group()


def _loss(model, every: list[dict], reduction: str) -> float:
    with torch.no_grad():
        if reduction == "token":
            return (sum(token_loss_sum(model(input_ids=b["input_ids"]).logits, b["labels"]) for b in every)
                    / sum(labelled(b["labels"]) for b in every)).item()
        means = [token_loss(model(input_ids=b["input_ids"]).logits, b["labels"]) for b in every]
        return (sum(means) / len(every)).item()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
