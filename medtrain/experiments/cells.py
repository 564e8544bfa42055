"""What a sweep cell's result depends on, recorded beside the result (cell.json) and compared on every rerun:
a cell is reused only when nothing that shapes its number changed, and the message says what did.

An identity holds the checkpoint (and a digest of its state and shard sizes), the SFT recipe after overrides,
the data manifests, the eval data and its digest, the extraction / scoring / shots / limit settings and the
medtrain version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from medtrain.core import __version__
from medtrain.core.digest import folder_digest, sha256_file, sizes_digest
from medtrain.core.log import get_logger
from medtrain.core.publish import publish_json

log = get_logger(__name__)

CELL_FILE = "cell.json"


def data_digest(path: Path) -> str:
    """A file's sha256, or for a benchmark folder one digest over every CSV's relative path and sha256."""
    path = Path(path)
    return sha256_file(path) if path.is_file() else folder_digest(path, "*.csv")


def checkpoint_identity(ckpt: Path) -> dict[str, Any]:
    """A checkpoint by its trainer state and the names and sizes of its files (hashing 26 GB of shards would
    cost minutes per cell; a rewritten checkpoint changes its state or its sizes)."""
    files = [f for f in ckpt.rglob("*") if f.is_file()]
    return {"checkpoint": str(ckpt), "trainer_state_sha256": sha256_file(ckpt / "trainer_state.json"),
            "files_sha256": sizes_digest(ckpt, files)}


def model_identity(model: Path) -> dict[str, Any]:
    """A Hugging Face directory by its config and lineage (a base model, or an export whose lineage names its
    checkpoint and data)."""
    model = Path(model)
    out: dict[str, Any] = {"model": str(model), "config_sha256": sha256_file(model / "config.json")}
    if (model / "lineage.json").is_file():
        out["lineage_sha256"] = sha256_file(model / "lineage.json")
    return out


def changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two identities: 'limit: 6 -> 10', 'recipe.lr: 0.003 -> 0.0001'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += changes(old.get(key), new.get(key), f"{path}{key}.")
        return out
    if old != new:
        short = [v[:12] if isinstance(v, str) and len(v) == 64 else v for v in (old, new)]
        return [f"{path.rstrip('.')}: {short[0]} -> {short[1]}"]
    return []


def claim(cell: Path, identity: dict[str, Any], done: Path) -> str:
    """'reuse' when `done` exists and the cell was made with this identity; 'resume' when an unfinished cell was
    started with it (a training run continues from its checkpoints); else 'fresh', after removing what was made
    otherwise and saying what changed."""
    identity = {**identity, "medtrain_version": __version__}
    recorded = cell / CELL_FILE
    if recorded.is_file():
        diff = changes(json.loads(recorded.read_text(encoding="utf-8")), identity)
        if not diff:
            if done.exists():
                log.info(f"{cell} done with the same settings, reusing")
                return "reuse"
            return "resume"
        log.info(f"{cell} was made with other settings ({'; '.join(diff)}); making it again")
    elif done.exists():
        log.info(f"{cell} has no record of the settings it was made with; making it again")
    if cell.exists():
        shutil.rmtree(cell)
    return "fresh"


def record(cell: Path, identity: dict[str, Any]) -> None:
    publish_json(cell / CELL_FILE, {**identity, "medtrain_version": __version__})
