"""The loss in chunks equals the whole-logits cross-entropy, in value and gradient, to fp32 rounding: labelled,
prompt-masked and ghost positions, chunk sizes that do and do not divide the sequence, fp32 and bf16 logits."""

import pytest
import torch
import torch.nn.functional as F

from medtrain.train.batches import IGNORE
from medtrain.train.loss import token_loss_sum


def _whole(logits, labels):
    shift = F.pad(labels[:, 1:], (0, 1), value=IGNORE).reshape(-1)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), shift, ignore_index=IGNORE, reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [1, 7, 16, 1024])
def test_chunked_loss_and_gradient_equal_the_whole_logits(dtype, chunk):
    torch.manual_seed(0)
    logits = (torch.randn(3, 16, 50) * 4).to(dtype)
    labels = torch.randint(0, 50, (3, 16))
    labels[0, :5] = IGNORE  # a prompt
    labels[2] = IGNORE  # a ghost row
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ours, ref = token_loss_sum(a, labels, chunk=chunk), _whole(b, labels)
    ours.backward()
    ref.backward()
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-4), (ours.item(), ref.item())
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert a.grad.dtype == dtype and torch.allclose(a.grad.float(), b.grad.float(), atol=tol)
    assert (a.grad[2] == 0).all() and (a.grad[0, :4] == 0).all()  # no gradient where nothing is labelled


def test_a_micro_batch_of_ghosts_has_zero_loss_with_a_graph():
    logits = torch.randn(1, 5, 10, requires_grad=True)
    loss = token_loss_sum(logits, torch.full((1, 5), IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()


def test_a_models_logits_take_their_own_gradient_in_place_with_the_same_result():
    """Logits that are an operation's output (a model's lm_head) receive the gradient in their own memory; what
    flows back is the same as from a separate buffer."""
    torch.manual_seed(1)
    hidden = torch.randn(2, 9, 8)
    head = torch.nn.Linear(8, 30, bias=False)
    labels = torch.randint(0, 30, (2, 9))
    token_loss_sum(head(hidden), labels).backward()
    ours = head.weight.grad.clone()
    head.weight.grad = None
    _whole(head(hidden), labels).backward()
    assert torch.allclose(ours, head.weight.grad, atol=1e-5)
