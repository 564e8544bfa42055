"""`medtrain prep inspect`: what a person needs to trust a dataset before spending GPUs on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medtrain.data_prep.format import DatasetError, TokenDataset
from medtrain.data_prep.tokenizer import Encoder


def histogram(lengths: np.ndarray, bins: int = 10, width: int = 40) -> list[str]:
    if len(lengths) == 0:
        return []
    edges = np.unique(np.linspace(lengths.min(), lengths.max() + 1, bins + 1).astype(int))
    counts, edges = np.histogram(lengths, bins=edges)
    top = max(counts.max(), 1)
    return [f"  {lo:>7}-{hi - 1:<7} {c:>8,} {'#' * int(round(width * c / top))}"
            for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)]


def inspect_dataset(root: Path, sample: int = 0, tokenizer: Path | None = None) -> str:
    data = TokenDataset(root)
    m = data.manifest
    lengths = data.doc_lengths()
    lines = [
        f"dataset   {root}",
        f"format    {m['format']}  kind {m['kind']}  source {m.get('source_type')}  dtype {m['dtype']}",
        f"tokenizer {m['tokenizer']['path']} (vocab {m['tokenizer']['vocab_size']}, "
        f"sha256 {m['tokenizer']['sha256'][:12]})",
        f"docs      {m['num_docs']:,}  tokens {m['num_tokens']:,}  "
        f"mean {lengths.mean():.1f}  median {np.median(lengths):.0f}  max {lengths.max():,}",
    ]
    if m.get("template"):
        lines.append(f"template  {m['template']['name']} v{m['template']['version']}")
    stats = m.get("stats", {})
    lines.append("stats     " + json.dumps(stats, ensure_ascii=False))
    if m["kind"] == "continual" and stats.get("target_tokens"):
        lines.append(f"target    {m['num_tokens']:,} of {stats['target_tokens']:,} tokens "
                     f"({100 * m['num_tokens'] / stats['target_tokens']:.4f}% of the paper's ~1B)")
    for src in m.get("sources", []):
        lines.append(f"source    {src.get('path')}: {src.get('records', src.get('docs_taken'))} records, "
                     f"skipped {src.get('skipped', {})}")
    lines.append("document length histogram (tokens):")
    lines += histogram(lengths)
    if not 0 <= sample < len(data):
        raise DatasetError(f"--sample {sample} is out of range: the dataset has {len(data)} documents")
    lines.append(f"sample {sample}:")
    lines += _decode_sample(data, sample, tokenizer or Path(m["tokenizer"]["path"]))
    return "\n".join(lines)


def _decode_sample(data: TokenDataset, i: int, tokenizer: Path) -> list[str]:

    ids = data[i]
    try:
        enc = Encoder(tokenizer)
    except DatasetError as e:
        return [f"  (cannot decode: {e}); ids: {list(map(int, ids[:64]))}"]
    if data.prompt_lens is not None:
        p = int(data.prompt_lens[i])
        return ["  --- prompt (no loss) ---", enc.decode(ids[:p]), "  --- response (trained) ---", enc.decode(ids[p:])]
    return [enc.decode(ids)]
