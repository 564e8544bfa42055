"""The trainer's data side on real prepared data: collation masks prompts, padding and ghost slots; a dataset from
another tokenizer is refused."""


import numpy as np
import pytest
import torch

from medtrain.data_prep.reader import open_samples
from medtrain.train.batches import IGNORE, collate
from medtrain.train.loss import token_loss


def test_collate_masks_prompt_padding_and_ghosts(tiny):
    samples = open_samples(tiny["cmexam"], "sft", 512)
    batch = collate(samples, np.array([0, 1, -1]), pad_id=3)
    for k in (0, 1):
        s = samples[k]
        n, p = len(s.input_ids), s.prompt_len
        assert (batch["labels"][k, :p] == IGNORE).all()
        assert (batch["labels"][k, p:n] == batch["input_ids"][k, p:n]).all()
        assert (batch["labels"][k, n:] == IGNORE).all() and batch["attention_mask"][k].sum() == n
    assert (batch["labels"][2] == IGNORE).all() and batch["attention_mask"][2].sum() == 0
    assert batch["input_ids"].shape[1] == max(len(samples[0].input_ids), len(samples[1].input_ids))
    logits = torch.randn(1, 5, 10, requires_grad=True)
    ghost = token_loss(logits, torch.full((1, 5), IGNORE))
    ghost.backward()
    assert ghost.item() == 0.0


def test_trainer_refuses_data_from_another_tokenizer(tiny):
    from medtrain.data_prep.format import DatasetError, TokenizerId

    with pytest.raises(DatasetError, match="not the run's"):
        open_samples(tiny["huatuo"], "continual", 64, tokenizer=TokenizerId("f" * 64, "f" * 64))
