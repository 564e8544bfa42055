"""Every hash medtrain takes of files and records, in one place: what identifies a dataset, a benchmark folder,
a checkpoint, a model and an eval's data. sha256 throughout, hex digests; a file is read in 1 MiB blocks so a
26 GB shard never sits in memory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: Any) -> str:
    """A record's hash independent of key order."""
    return sha256_text(json.dumps(obj, sort_keys=True, ensure_ascii=False))


def folder_digest(root: Path, pattern: str = "*") -> str:
    """One digest over every matching file's relative path and sha256 (a benchmark folder, a tokenizer)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob(pattern) if p.is_file()):
        h.update(f"{f.relative_to(root)}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def sizes_digest(root: Path, files: list[Path], head: Path | None = None) -> str:
    """Cheap identity of large files: their names and sizes (and the bytes of one small `head` file such as a
    config), where hashing gigabytes on every node or every cell would cost minutes."""
    listing = sorted((str(Path(f).relative_to(root)), Path(f).stat().st_size) for f in files)
    h = hashlib.sha256(head.read_bytes() if head is not None else b"")
    h.update(json.dumps(listing).encode())
    return h.hexdigest()
