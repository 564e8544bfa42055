from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def shared_data(*parts: str) -> Path:
    """A file of ../shared/data; missing is a failure under CI and a skip elsewhere."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing (CI runs with ../shared/data beside the clone)")
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def loopback_cluster(tmp_path_factory):
    from cluster import start_loopback_cluster

    cluster = start_loopback_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from data_prep.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("hf")
    texts = [p.read_text() for p in (REPO / 'data_prep' / 'samples').rglob("*.csv")]
    tok_dir = train_bpe_tokenizer(texts, root / "model", vocab_size=600)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                      pad_token_id=3)
    LlamaForCausalLM(cfg).save_pretrained(tok_dir)
    return tok_dir
