"""`medtrain prep mix`: one dataset from several, each taken `weight` times (0.3 = a seeded 30% subset, 2 = twice).

Table 4's CMExam + MedQA + MedMCQA is `--input a:1 --input b:1 --input c:1`; general-domain replay against
forgetting is `--input medical:1 --input general:0.1`. The result is an ordinary dataset the trainer reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrain.core.digest import sha256_file
from medtrain.core.templates import mode_of
from medtrain.data_prep.format import DatasetError, DatasetWriter, TokenDataset


def parse_weighted(item: str) -> tuple[Path, float]:
    path, sep, weight = item.rpartition(":")
    if not sep:
        return Path(item), 1.0
    try:
        w = float(weight)
    except ValueError:
        raise DatasetError(f"--input {item}: weight '{weight}' is not a number (use DIR:WEIGHT)") from None
    if w <= 0:
        raise DatasetError(f"--input {item}: weight must be > 0")
    return Path(path), w


def chosen_docs(n: int, weight: float, seed: int) -> np.ndarray:
    whole, frac = int(weight), weight - int(weight)
    rng = np.random.default_rng(seed)
    extra = np.sort(rng.choice(n, size=int(round(frac * n)), replace=False)) if frac else np.empty(0, np.int64)
    return np.concatenate([np.tile(np.arange(n), whole), extra]).astype(np.int64)


def mix(inputs: list[tuple[Path, float]], out: Path, seed: int = 0, overwrite: bool = False) -> dict:
    if not inputs:
        raise DatasetError("prep mix needs at least one --input DIR:WEIGHT")
    parts = [(TokenDataset(p), w) for p, w in inputs]
    first = parts[0][0].manifest
    for data, _ in parts[1:]:
        m = data.manifest
        if m["kind"] != first["kind"]:
            raise DatasetError(f"{data.root}: a {m['kind']} dataset cannot be mixed with {first['kind']} "
                               f"({parts[0][0].root})")
        if m["tokenizer"].get("fingerprint") != first["tokenizer"].get("fingerprint"):
            raise DatasetError(f"{data.root}: prepared with another tokenizer than {parts[0][0].root}; re-run prep")
        if m.get("template") != first.get("template"):
            raise DatasetError(f"{data.root}: template {_template_name(m)} differs from {parts[0][0].root}'s "
                               f"{_template_name(first)}, and eval could not parse what training taught; re-run "
                               f"`medtrain prep {m.get('source_type', 'SOURCE')} --mode {_mode(first)} --out "
                               f"{data.root} --overwrite` (with its --input and --tokenizer)")
    sft = first["kind"] == "sft"
    writer = DatasetWriter(out, first["tokenizer"]["vocab_size"], sft=sft)
    sources = []
    try:
        for k, (data, weight) in enumerate(parts):
            docs = chosen_docs(len(data), weight, seed + k)
            for i in docs:
                writer.add(data[int(i)], prompt_len=int(data.prompt_lens[i]) if sft else 0)
            digest = sha256_file(data.root / "manifest.json")
            sources.append({"path": str(data.root), "source_type": data.manifest.get("source_type"),
                            "manifest_sha256": digest, "weight": weight,
                            "docs_taken": int(len(docs)), "docs_available": len(data)})
    except BaseException:
        writer.abort()
        raise
    manifest = {"kind": first["kind"], "source_type": "mix", "tokenizer": first["tokenizer"], "sources": sources,
                "template": first.get("template"), "stats": {"seed": seed, "seq_len": first.get("stats", {})
                                                             .get("seq_len")},
                "medtrain_version": first.get("medtrain_version")}
    writer.finalize(manifest, overwrite=overwrite)
    return manifest


def _template_name(manifest: dict) -> str:
    template = manifest.get("template")
    return template.get("name", str(template)) if isinstance(template, dict) else str(template)


def _mode(manifest: dict) -> str:

    return mode_of(_template_name(manifest)) or _template_name(manifest)
