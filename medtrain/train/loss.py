"""The next-token loss and how a step reduces it. `LossReduction` is the one object that decides both what each
micro-batch's backward carries and what loss the logs report, so the two cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medtrain.core.recipe import RecipeError
from medtrain.core.run_spec import LOSS_CHUNK_TOKENS
from medtrain.train.batches import IGNORE


def labelled(labels: torch.Tensor) -> int:
    """Tokens that carry loss in a micro-batch: next-token targets that are not prompt, padding or ghost."""
    return int((labels[:, 1:] != IGNORE).sum())


CHUNK_TOKENS = LOSS_CHUNK_TOKENS


class ChunkedCrossEntropy(torch.autograd.Function):
    """The summed cross-entropy of (N, V) logits in the training dtype, computed a chunk of positions at a time in
    fp32: forward keeps only the logits it was given (no fp32 copy of them, no saved softmax), backward recomputes
    each chunk's softmax and writes the gradient in the logits' own dtype — into the logits' own memory when they
    are a model's output (nothing reads them after the loss), so the loss adds one chunk's fp32, not a second
    logits-sized tensor. Equal to F.cross_entropy over logits.float() to fp32 rounding, in value and gradient; no
    Triton, so it runs wherever torch does (V100s)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for start in range(0, logits.size(0), chunk):
            x, t = logits[start:start + chunk].float(), targets[start:start + chunk]
            keep = t != IGNORE
            picked = x.gather(1, t.clamp_min(0).unsqueeze(1)).squeeze(1)
            total += ((torch.logsumexp(x, dim=-1) - picked) * keep).sum()
            del x  # this chunk's upcast goes before the next one is made
        ctx.save_for_backward(logits, targets)
        ctx.chunk, ctx.in_place = chunk, not logits.is_leaf and logits.is_contiguous()
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets = ctx.saved_tensors
        out = logits if ctx.in_place else torch.empty_like(logits)
        for start in range(0, logits.size(0), ctx.chunk):
            t = targets[start:start + ctx.chunk]
            p = torch.softmax(logits[start:start + ctx.chunk].float(), dim=-1)
            p.scatter_add_(1, t.clamp_min(0).unsqueeze(1), torch.full_like(p[:, :1], -1.0))
            p.mul_((t != IGNORE).unsqueeze(1)).mul_(grad)
            out[start:start + ctx.chunk] = p
            del p
        return out, None, None


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, chunk: int = CHUNK_TOKENS) -> torch.Tensor:
    """Summed next-token loss over labelled tokens (0 with a graph when a micro-batch holds only ghosts), never
    holding the whole logits in fp32 (ChunkedCrossEntropy)."""
    # shift the labels, not the logits: slicing logits[:, :-1] would copy the largest tensor of the step
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE).reshape(-1)
    return ChunkedCrossEntropy.apply(logits.reshape(-1, logits.size(-1)), shift_labels, chunk)


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over one micro-batch's labelled tokens (loss_reduction: micro_batch)."""
    return token_loss_sum(logits, labels) / max(labelled(labels), 1)


@dataclass(frozen=True)
class LossReduction:
    """token: the step's loss is the sum over every labelled token of the global batch over their count
    (torchtune, torchtitan, transformers >= 4.46). micro_batch: each micro-batch's mean, averaged (transformers
    < 4.46, the paper's Trainer)."""
    name: str

    NAMES = ("token", "micro_batch")

    def __post_init__(self) -> None:
        if self.name not in self.NAMES:
            raise RecipeError(f"loss_reduction '{self.name}' is not one of {', '.join(self.NAMES)}")

    @classmethod
    def of(cls, value: LossReduction | str) -> LossReduction:
        return value if isinstance(value, LossReduction) else cls(value)

    @property
    def token_weighted(self) -> bool:
        return self.name == "token"

    def micro_batch(self, logits: torch.Tensor, labels: torch.Tensor, micro_batches: int, token_scale: float
                    ) -> tuple[torch.Tensor, float]:
        """(what this micro-batch's backward carries, what it adds to this rank's logged loss). `token_scale`
        turns a token sum into its share of the global batch's mean (accumulate() derives it)."""
        if self.token_weighted:
            summed = token_loss_sum(logits, labels)
            return summed * token_scale, summed.item()
        loss = token_loss(logits, labels)
        return loss, loss.item() / micro_batches

    def logged(self, loss_sum: float, labels: float, world: int, steps: int) -> float:
        """The loss a log line reports for a window of steps, from the sums all-reduced over the ranks: the mean
        over every labelled token (token), or the mean of the micro-batch means over ranks and steps."""
        return loss_sum / max(labels, 1.0) if self.token_weighted else loss_sum / world / steps
