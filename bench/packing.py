"""`packing: documents` against one document per sample and against the HF Trainer's padding-free collator, and
the chunked loss's peak memory against whole fp32 logits.

The data is CMExam's real val split with explanations (../shared/data/cmexam/val.csv, the paper's "with
reasoning" SFT data) prepared by `medtrain prep` with Llama-2's tokenizer at seq_len 2048; the model is the
named shape tiny-wide (vocabulary 32,000), fp32, on this process's CPU threads (one rank: the comparison is of
what a step computes, which ranks only multiply). Every side trains on the same documents from the same
weights, one optimizer step per micro-batch:

  per_document   4 documents per micro-batch, padded to the longest (medtrain's per_document / SFT default)
  documents      4 rows of packed documents per micro-batch, attention per document (train/attention.py)
  hf_flattening  the HF Trainer with DataCollatorWithFlattening on the same 4 rows' documents per step (one
                 flattened row, position ids restarting), on SDPA as the Trainer runs this model

documents and per_document alternate over two rounds, each from fresh weights, and the better round of each
counts (this shared 2-core machine varies by 10-20% between runs).

Useful tokens are labelled tokens (the answer and explanation, not the prompt). Then the loss of 4,096 positions
over a 32,000-entry vocabulary with its backward, in a fresh process each, whole-logits (`logits.float()` and
F.cross_entropy) against medtrain's chunked loss: peak resident memory above the logits themselves.

    python bench/packing.py [--rows 24] [--micro-batch 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save  # noqa: E402
from medtrain.core.model_specs import resolve_shape  # noqa: E402
from medtrain.data_prep.pipeline import prep  # noqa: E402
from medtrain.data_prep.reader import DocumentRows, SftSamples, epoch_order, open_samples  # noqa: E402
from medtrain.train.attention import DOCUMENTS  # noqa: E402
from medtrain.train.batches import IGNORE, collate  # noqa: E402
from medtrain.train.loss import labelled, token_loss_sum  # noqa: E402

SEQ = 2048


def prepared(root: Path) -> Path:
    out = root / "cmexam_val"
    prep("cmexam", [SHARED / "cmexam" / "val.csv"], SHARED / "tokenizers" / "llama2", out, mode="with_reasoning",
         seq_len=SEQ)
    return out


def model_of(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**resolve_shape("tiny-wide", vocab_size=32000).to_hf_config()))


def micro_batches(rows: DocumentRows, docs: SftSamples, n_rows: int, micro: int) -> tuple[list, list]:
    """The first n_rows rows in micro-batches of `micro` rows, and the same documents in micro-batches of
    `micro` documents (document order kept)."""
    packed = [collate(rows, np.arange(s, min(s + micro, n_rows)), pad_id=0) for s in range(0, n_rows, micro)]
    n_docs = int(rows.bounds[n_rows])
    single = [collate(docs, np.arange(s, min(s + micro, n_docs)), pad_id=0) for s in range(0, n_docs, micro)]
    return packed, single


def padding_share(samples, micro: int) -> float:
    """Positions computed that belong to no document, over a whole epoch in the order training sees it (seed 0,
    epoch 0), micro-batches of `micro` samples: padding over all positions."""
    order = epoch_order(len(samples), 0, 0)
    total = real = 0
    for s in range(0, len(order), micro):
        lengths = [len(samples[int(i)].input_ids) for i in order[s:s + micro]]
        total, real = total + max(lengths) * len(lengths), real + sum(lengths)
    return 1 - real / total


def ours_loss(model, batch: dict) -> torch.Tensor:
    if "position_ids" in batch:
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_loss_sum(logits, batch["labels"]) / max(labelled(batch["labels"]), 1)


def train_rate(model, batches: list[dict], attention: str) -> float:
    """Labelled tokens per second over one optimizer step per micro-batch (the first step excluded: warm-up)."""
    model.set_attn_implementation(attention)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    start, useful = 0.0, 0
    for i, batch in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        loss = ours_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 1:
            useful += labelled(batch["labels"])
    return useful / (time.perf_counter() - start)


def hf_features(rows: DocumentRows, n_rows: int, micro: int) -> list[list[dict]]:
    """The documents of each micro-batch of rows as HF features (input_ids, labels with the prompt masked)."""
    groups = []
    for s in range(0, n_rows, micro):
        feats = []
        for d in range(int(rows.bounds[s]), int(rows.bounds[min(s + micro, n_rows)])):
            ids = np.asarray(rows.data[d][:SEQ], dtype=np.int64).tolist()
            prompt = min(int(rows.data.prompt_lens[d]), len(ids))
            feats.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
        groups.append(feats)
    return groups


def hf_flattening(model, groups: list[list[dict]]) -> tuple[float, list[float], list[float]]:
    """The HF Trainer, one optimizer step per group of documents flattened into one row: labelled tokens/s
    (first step excluded), each group's loss before any step (the model's own loss over the flattened row, on
    SDPA as the Trainer runs it), and the same rows' loss with medtrain's documents attention."""
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    flatten = DataCollatorWithFlattening()
    model.set_attn_implementation("sdpa")
    model.eval()
    with torch.no_grad():
        losses = [model(**flatten(g)).loss.item() for g in groups]
        model.set_attn_implementation(DOCUMENTS)  # the same flattened rows, attention kept inside documents
        kept = [model(**flatten(g)).loss.item() for g in groups]
        model.set_attn_implementation("sdpa")
    times: list[float] = []

    class Timed(Trainer):
        def training_step(self, *args, **kwargs):
            t = time.perf_counter()
            out = super().training_step(*args, **kwargs)
            times.append(time.perf_counter() - t)
            return out

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=1, max_steps=len(groups),
                                 learning_rate=1e-3, optim="sgd", lr_scheduler_type="constant", report_to=[],
                                 use_cpu=True, remove_unused_columns=False, logging_strategy="no",
                                 save_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
        trainer = Timed(model=model, args=args, train_dataset=[{"docs": g} for g in groups],
                        data_collator=lambda items: flatten(items[0]["docs"]))
        trainer.train()
    useful = sum(sum(x != IGNORE for x in f["labels"][1:]) for g in groups[1:] for f in g)
    return useful / sum(times[1:]), losses, kept


LOSS_PROBE = """
import os, sys, threading, time, torch, torch.nn.functional as F
from medtrain.train.loss import token_loss_sum
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
torch.manual_seed(0)
hidden = torch.randn(1, 4096, 64, dtype=torch.bfloat16, requires_grad=True)
head = torch.randn(32000, 64, dtype=torch.bfloat16) / 8
logits = hidden @ head.T  # a model's output, as the lm_head gives it
labels = torch.randint(0, 32000, (1, 4096))
time.sleep(0.2)
base, peak, done = rss(), [0], [False]
def watch():
    while not done[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
t = threading.Thread(target=watch)
t.start()
if sys.argv[1] == "whole":
    shift = F.pad(labels[:, 1:], (0, 1), value=-100).reshape(-1)
    loss = F.cross_entropy(logits.float().reshape(-1, 32000), shift, ignore_index=-100, reduction="sum")
else:
    loss = token_loss_sum(logits, labels)
loss.backward()
done[0] = True
t.join()
print(max(peak[0], rss()) - base)
"""
"""Peak resident memory above the logits (bf16, 1 x 4,096 x 32,000, an lm_head's output) while the loss and its
backward (to the hidden states) run,
sampled every half millisecond in a fresh process; large tensors are mmap'd by the allocator, so what is freed
leaves the resident set and each variant's own peak is what is seen."""


def loss_peak_bytes(kind: str) -> int:
    out = subprocess.run([sys.executable, "-c", LOSS_PROBE, kind], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=24, help="packed rows trained on (their documents for the others)")
    ap.add_argument("--micro-batch", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = prepared(Path(tmp))
        rows, docs = open_samples(data, "sft", SEQ, "documents"), open_samples(data, "sft", SEQ, "per_document")
        packed, single = micro_batches(rows, docs, min(args.rows, len(rows)), args.micro_batch)
        model = model_of()
        model.set_attn_implementation(DOCUMENTS)
        with torch.no_grad():
            ours = [ours_loss(model.eval(), b).item() for b in packed]
            model.set_attn_implementation("sdpa")
            n_rows = min(args.rows, len(rows))
            n_docs = [int(rows.bounds[min(s + args.micro_batch, n_rows)] - rows.bounds[s])
                      for s in range(0, n_rows, args.micro_batch)]
            one_per = _regrouped_losses(model, single, n_docs, args.micro_batch)
        loss_diff = max(abs(a - b) / abs(b) for a, b in zip(ours, one_per, strict=True))
        rounds = [(train_rate(model_of(), packed, DOCUMENTS), train_rate(model_of(), single, "sdpa"))
                  for _ in range(2)]
        rate_docs, rate_single = max(r[0] for r in rounds), max(r[1] for r in rounds)
        groups = hf_features(rows, min(args.rows, len(rows)), args.micro_batch)
        hf_rate, hf_losses, hf_kept = hf_flattening(model_of(), groups)
        hf_diff = max(abs(a - b) / abs(b) for a, b in zip(ours, hf_losses, strict=True))
        kept_diff = max(abs(a - b) / abs(b) for a, b in zip(ours, hf_kept, strict=True))
    whole, chunked = loss_peak_bytes("whole"), loss_peak_bytes("chunked")
    result = {
        "data": "cmexam val.csv with explanations, Llama-2 tokenizer, seq_len 2048", "model": "tiny-wide fp32",
        "documents": len(docs), "rows": len(rows), "documents_per_row": len(docs) / len(rows),
        "micro_batch": args.micro_batch, "rows_timed": len(packed) * args.micro_batch,
        "padding_share_per_document": padding_share(docs, args.micro_batch),
        "padding_share_documents": padding_share(rows, args.micro_batch),
        "useful_tokens_per_s_documents": rate_docs, "useful_tokens_per_s_per_document": rate_single,
        "useful_tokens_per_s_ratio": rate_docs / rate_single, "rounds": rounds,
        "loss_max_rel_diff": loss_diff,
        "hf_flattening_useful_tokens_per_s": hf_rate, "hf_flattening_speed_ratio": rate_docs / hf_rate,
        "hf_flattening_loss_max_rel_diff": hf_diff,
        "hf_flattening_rows_on_documents_attention_loss_max_rel_diff": kept_diff,
        "loss_peak_bytes_whole": whole, "loss_peak_bytes_chunked": chunked,
        "loss_peak_memory_ratio": whole / chunked,
    }
    print(f"padding: per_document {result['padding_share_per_document']:.1%}, documents "
          f"{result['padding_share_documents']:.1%} ({result['documents_per_row']:.1f} documents per row)\n"
          f"useful tokens/s: documents {rate_docs:,.0f} vs per_document {rate_single:,.0f} = "
          f"{result['useful_tokens_per_s_ratio']:.2f}x; vs HF DataCollatorWithFlattening {hf_rate:,.0f} = "
          f"{result['hf_flattening_speed_ratio']:.2f}x\n"
          f"loss: packed vs one per sample max rel diff {loss_diff:.1e}; vs HF flattening {hf_diff:.1e} (its rows "
          f"on medtrain's documents attention: {kept_diff:.1e})\n"
          f"loss peak memory at 4096 x 32000: whole {whole / 2**20:,.0f} MiB, chunked {chunked / 2**20:,.0f} MiB "
          f"= {result['loss_peak_memory_ratio']:.1f}x")
    save("packing", result)


def _regrouped_losses(model, single: list[dict], n_docs: list[int], micro: int) -> list[float]:
    """The token-weighted loss of each packed micro-batch's documents, computed one document per sample."""
    sums, counts = [], []
    for b in single:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        for k in range(b["input_ids"].shape[0]):
            sums.append(token_loss_sum(logits[k:k + 1], b["labels"][k:k + 1]).item())
            counts.append(labelled(b["labels"][k:k + 1]))
    out, at = [], 0
    for n in n_docs:
        out.append(sum(sums[at:at + n]) / max(sum(counts[at:at + n]), 1))
        at += n
    return out


if __name__ == "__main__":
    main()
