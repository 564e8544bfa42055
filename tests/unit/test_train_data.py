"""The trainer's data side on datasets in the on-disk format: collation masks prompts, padding and ghost slots;
continual data packs into seq_len rows; a dataset from another tokenizer is refused."""

import json

import numpy as np
import pytest
import torch

from medtrain.data_prep.format import DatasetError, TokenizerId
from medtrain.data_prep.reader import open_samples
from medtrain.train.batches import IGNORE, collate
from medtrain.train.loss import token_loss


def test_collate_masks_prompt_padding_and_ghosts(token_data):
    samples = open_samples(token_data["sft"], "sft", 512)
    batch = collate(samples, np.array([0, 1, -1]), pad_id=3)
    for k, (n, p) in enumerate([(32, 10), (7, 3)]):
        assert len(samples[k].input_ids) == n and samples[k].prompt_len == p
        assert (batch["labels"][k, :p] == IGNORE).all()
        assert (batch["labels"][k, p:n] == batch["input_ids"][k, p:n]).all()
        assert (batch["labels"][k, n:] == IGNORE).all() and batch["attention_mask"][k].sum() == n
    assert (batch["labels"][2] == IGNORE).all() and batch["attention_mask"][2].sum() == 0
    assert batch["input_ids"].shape[1] == 32
    logits = torch.randn(1, 5, 10, requires_grad=True)
    ghost = token_loss(logits, torch.full((1, 5), IGNORE))
    ghost.backward()
    assert ghost.item() == 0.0


def test_continual_data_packs_into_full_rows(token_data):
    samples = open_samples(token_data["continual"], "continual", 16)
    assert len(samples) == (32 + 7 + 72 + 14 + 43 + 11) // 16
    assert all(len(samples[i].input_ids) == 16 for i in range(len(samples)))


def test_trainer_refuses_data_from_another_tokenizer(token_data):
    recorded = json.loads((token_data["continual"] / "manifest.json").read_text())["tokenizer"]["fingerprint"]
    open_samples(token_data["continual"], "continual", 16, tokenizer=TokenizerId("f" * 64, recorded))
    with pytest.raises(DatasetError, match="not the run's"):
        open_samples(token_data["continual"], "continual", 16, tokenizer=TokenizerId("f" * 64, "f" * 64))
