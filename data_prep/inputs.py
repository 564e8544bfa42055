"""`prep --input` as users of the hub name it: a file, a Hugging Face data set id, a snapshot folder, or a
`datasets.save_to_disk` directory, reduced to the files the source readers know.

A hub id resolves through the hub cache (core.hub: cache first, then a download, offline a line naming the
fetch command); the split's files are picked by name (`train_datasets.jsonl`, `data/train-00000-of-00001.parquet`,
...). Parquet and Arrow, which the readers do not parse, are read by `datasets` and written as JSON Lines into a
staging folder beside the output that lives as long as the `with` block, so every source keeps one reader and
the parallel JSON Lines path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core import hub
from medtrain.core.publish import staging_dir
from medtrain.data_prep.format import DatasetError

READABLE = (".jsonl", ".json", ".csv", ".txt", ".jsonl.gz", ".json.gz")
COLUMNAR = (".parquet", ".arrow")
# Known hub copies, so `medtrain prep huatuo` runs as the paper did with nothing named.
DEFAULT_INPUTS = {"huatuo": "FreedomIntelligence/huatuo_encyclopedia_qa"}


@dataclass
class Inputs:
    files: list[Path]
    origins: list[dict] = field(default_factory=list)
    """Provenance of hub inputs: id, revision (commit), and the files used."""


@contextmanager
def staged_inputs(refs: list[str], split: str, out: Path) -> Iterator[Inputs]:
    """The readable files for `refs`, any conversions staged beside `out` and removed when the block ends."""
    staging = staging_dir(out.parent / f".{out.name}.inputs")
    try:
        yield resolve_inputs(refs, split, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_inputs(refs: list[str], split: str, staging: Path) -> Inputs:
    files: list[Path] = []
    origins: list[dict] = []
    for ref in refs:
        path = Path(ref).expanduser()
        if path.is_file():
            files.append(path)
            continue
        if path.is_dir():
            picked = _split_files(path, split, ref)
            origin = hub.snapshot_origin(path)
        else:
            r = hub.resolve(ref, what="--input", repo_type="dataset", need=("*",))
            picked, origin = _split_files(r.path, split, ref), r
        if origin.hub_id is not None:
            origins.append({**origin.provenance(), "split": split,
                            "files": [str(p.relative_to(origin.path)) for p in picked]})
        files.extend(_readable(p, staging) for p in picked)
    return Inputs(files, origins)


def _split_files(root: Path, split: str, ref: str) -> list[Path]:
    """The files of one split in a data set folder: a `save_to_disk` split, else files named for the split, else
    the only data file there is."""
    if (root / "dataset_dict.json").is_file() or (root / "dataset_info.json").is_file():
        split_dir = root / split if (root / split / "dataset_info.json").is_file() else root
        found = sorted(split_dir.glob("*.arrow"))
        if found:
            return found
    data = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name.endswith(READABLE + COLUMNAR)
            and not p.name.startswith(".") and p.name not in ("dataset_info.json", "dataset_dict.json", "state.json")]
    named = [p for p in data if split in p.relative_to(root).as_posix().lower()]
    if named:
        return named
    if len(data) == 1:
        return data
    listing = ", ".join(str(p.relative_to(root)) for p in data[:8]) or "no data files"
    raise DatasetError(f"{ref}: no file of split '{split}' ({listing}); pick one with --split or name the file "
                       "with --input")


def _readable(path: Path, staging: Path) -> Path:
    if not path.name.endswith(COLUMNAR):
        return path
    import datasets

    ds = (datasets.Dataset.from_parquet(str(path)) if path.suffix == ".parquet"
          else datasets.Dataset.from_file(str(path)))
    staging.mkdir(parents=True, exist_ok=True)
    out = staging / f"{len(list(staging.iterdir())):03d}-{path.stem}.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for row in ds:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return out
