"""The unit tier's data: small datasets written straight in the on-disk format (tokens.npy, offsets.npy,
prompt_lens.npy, manifest.json; docs/architecture.md), from fixed token ids. No tokenizer is trained and nothing
is prepared, so the tier runs in seconds; prep itself is tested in tests/integration."""

import json
from pathlib import Path

import numpy as np

VOCAB = 100
FINGERPRINT = "a" * 64
"""The tokenizer the datasets below claim to be prepared with."""


def write_dataset(out: Path, docs: list[list[int]], prompt_lens: list[int] | None = None) -> Path:
    """A dataset as prep would leave it: uint16 ids, document boundaries, prompt lengths for SFT, the manifest."""
    out.mkdir(parents=True)
    np.save(out / "tokens.npy", np.array([t for d in docs for t in d], dtype=np.uint16))
    np.save(out / "offsets.npy", np.cumsum([0, *map(len, docs)]).astype(np.int64))
    if prompt_lens is not None:
        np.save(out / "prompt_lens.npy", np.array(prompt_lens, dtype=np.int32))
    manifest = {"format": "medtrain.tokens/1", "kind": "sft" if prompt_lens is not None else "continual",
                "tokenizer": {"path": "tok", "sha256": "b" * 64, "fingerprint": FINGERPRINT, "vocab_size": VOCAB,
                              "bos_id": 1, "eos_id": 2, "pad_id": 0},
                "dtype": "uint16", "num_docs": len(docs), "num_tokens": sum(map(len, docs)), "sources": []}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def token_datasets(root: Path) -> dict[str, Path]:
    """A continual and an SFT dataset of six documents each (the unit tier's `token_data` fixture)."""
    rng = np.random.default_rng(0)
    docs = [[1, *rng.integers(3, VOCAB, n).tolist(), 2] for n in (30, 5, 70, 12, 41, 9)]
    return {"continual": write_dataset(root / "continual", docs),
            "sft": write_dataset(root / "sft", docs, prompt_lens=[10, 3, 20, 6, 15, 4])}
