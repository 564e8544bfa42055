"""Attention that stays inside each document of a packed row (`packing: documents`): each document attends to
itself alone, causally, so a row of k documents costs the sum of their lengths squared, never a dense
block-diagonal mask over the whole row. Documents are found where the position ids restart at 0.

Where flash-attention is installed (and the GPU has it: compute capability 8.0 or newer) its varlen kernel does
this from the same position ids (transformers' "flash_attention_2"); elsewhere — the CPU, V100s — this module's
function runs SDPA once per document inside the row. It is registered with transformers under DOCUMENTS, with a
mask function that builds no mask (the causal mask of each document is SDPA's own)."""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface

DOCUMENTS = "medtrain_documents"


def document_starts(position_ids: torch.Tensor) -> list[int]:
    """Where each document of one row begins (its position id is 0), and the row's end."""
    return [*(position_ids == 0).nonzero().flatten().tolist(), position_ids.numel()]


_seen: list = [None, -1, []]
"""The last position ids seen (the tensor, its version) and their rows' document starts: every layer of one
forward (and its recomputation under activation checkpointing) gets the same tensor, so the starts — a
device-to-host copy on a GPU — are found once per forward, not once per layer."""


def rows_starts(position_ids: torch.Tensor) -> list[list[int]]:
    if _seen[0] is not position_ids or _seen[1] != position_ids._version:
        rows = position_ids if position_ids.dim() > 1 else position_ids.unsqueeze(0)
        _seen[:] = [position_ids, position_ids._version, [document_starts(row) for row in rows]]
    return _seen[2]


def documents_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                        **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: query (B, H, L, D), key and value (B, KV, L, D); returns
    (B, L, H, D). The row's documents come from `position_ids` (B, L), which the model passes down; without them
    (a probe of the whole model, as export's check) each row is one document."""
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        position_ids = torch.arange(query.shape[2], device=query.device)
    gqa = key.shape[1] != query.shape[1]
    rows, row_starts = [], rows_starts(position_ids)
    for b in range(query.shape[0]):
        starts = row_starts[b if len(row_starts) > 1 else 0]
        rows.append(torch.cat([
            F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
                                           is_causal=True, scale=scaling,
                                           dropout_p=dropout if module.training else 0.0, enable_gqa=gqa)
            for s, e in zip(starts, starts[1:], strict=False)], dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs) -> None:
    return None


AttentionInterface.register(DOCUMENTS, documents_attention)
AttentionMaskInterface.register(DOCUMENTS, _no_mask)


def packed_attention(device_type: str, capability: tuple[int, int] | None) -> str:
    """The attention implementation for rows of packed documents on this device."""
    flash = importlib.util.find_spec("flash_attn") is not None
    if flash and device_type == "cuda" and capability is not None and capability >= (8, 0):
        return "flash_attention_2"
    return DOCUMENTS
