"""Training FLOPs per token, the one formula behind `medtrain plan`'s time estimate and the trainer's TFLOP/s,
MFU and HFU (PaLM, Chowdhery et al. 2022, appendix B).

Model FLOPs per token = 6N + 12·L·h·s: N the parameters that multiply (all but the input embedding lookup), and
the attention scores and their use over a sequence of s tokens. Hardware FLOPs add what gradient checkpointing
recomputes: one more forward pass, so 8N + 16·L·h·s. MFU divides the first by the peak, HFU the second.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtrain.core.model_specs import LlamaShape


@dataclass(frozen=True)
class TokenFlops:
    model: float
    """FLOPs per trained token that the model needs (forward + backward)."""
    hardware: float
    """FLOPs per trained token the hardware executes (recomputation included)."""


def flops_per_token(shape: LlamaShape, seq_len: float, recompute: bool) -> TokenFlops:
    """seq_len: the mean length of the sequences the tokens come in (attention cost grows with it)."""
    n = shape.num_params() - shape.vocab_size * shape.hidden_size  # the input embedding is a lookup
    attention = 12 * shape.num_hidden_layers * shape.hidden_size * seq_len
    model = 6 * n + attention
    return TokenFlops(model, model * 4 / 3 if recompute else model)


def utilisation(tokens_per_s: float, world: int, flops: TokenFlops, peak_tflops: float) -> dict[str, float]:
    """Achieved TFLOP/s per GPU, MFU and HFU (fractions); MFU/HFU only where a peak is known."""
    per_gpu = tokens_per_s * flops.model / world / 1e12
    out = {"tflops_per_gpu": per_gpu}
    if peak_tflops > 0:
        out["mfu"] = per_gpu / peak_tflops
        out["hfu"] = tokens_per_s * flops.hardware / world / 1e12 / peak_tflops
    return out
