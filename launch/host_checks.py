"""What `--check` verifies on every host, not only on the one it is typed on: the data, tokenizer and model the
recipe names exist there and are the same ones (by what decides the run, not by path), and the output directory
is writable with room for what the plan will write.

The launching side writes its expectations (`expectations`) into the ranks' environment; each host's first
rank runs `check_host` and reports the problems in its preflight line. A cluster whose shared filesystem is
not mounted on one node, or whose scratch is nearly full, fails here in seconds instead of at step 0 or at the
first checkpoint hours later.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

from medtrain.core.digest import sha256_file, sizes_digest
from medtrain.core.disk import free_bytes
from medtrain.core.recipe import Recipe, RecipeError
from medtrain.data_prep.tokenizer import tokenizer_fingerprint

ENV = "MEDTRAIN_PREFLIGHT_EXPECT"
GiB = 2**30


def _data_digest(path: Path) -> str:
    return sha256_file(path / "manifest.json")


def _tokenizer_digest(path: Path) -> str:

    return tokenizer_fingerprint(path)


def _model_digest(path: Path) -> str:
    """The config and the names and sizes of the weight files (hashing 26 GB on every node would take minutes)."""
    files = [f for f in path.iterdir() if f.suffix in (".safetensors", ".bin") or f.name.endswith(".index.json")]
    return sizes_digest(path, files, head=path / "config.json")


DIGESTS = {"data": _data_digest, "tokenizer": _tokenizer_digest, "model": _model_digest}


def expectations(recipe: Recipe, disk_bytes: float) -> dict:
    """What every host must see: each input path with its digest here, the output dir with the bytes the plan
    will write into it, and the precision its GPUs must run (core.environment)."""
    paths = {"data": Path(recipe.data), "tokenizer": Path(recipe.tokenizer_dir)}
    if recipe.init != "random":
        paths["model"] = Path(recipe.model)
    expect: dict = {"paths": {}, "output": {"path": str(Path(recipe.output_dir).resolve()), "bytes": int(disk_bytes)},
                    "precision": recipe.precision, "wants_gpu": recipe.wants_gpu}
    for what, path in paths.items():
        path = path.resolve()
        if not path.is_dir():
            raise RecipeError(f"{recipe.source}: {what} '{path}' is not a directory on this machine; --check compares "
                              "every host's copy with this one, so run it where the paths are mounted")
        expect["paths"][what] = {"path": str(path), "digest": DIGESTS[what](path)}
    return expect


def encode(expect: dict) -> str:
    """One shell-safe token: it travels through .deepspeed_env, pdsh and sbatch --export."""
    return base64.urlsafe_b64encode(json.dumps(expect).encode()).decode().rstrip("=")


def decode(value: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def check_host(expect: dict) -> list[str]:
    """This host's problems, one short phrase each (empty when all is well)."""
    problems = []
    for what, e in expect.get("paths", {}).items():
        path = Path(e["path"])
        if not path.exists():
            problems.append(f"{what} {path} missing here")
            continue
        try:
            same = DIGESTS[what](path) == e["digest"]
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"{what} {path} unreadable here ({type(err).__name__}: {err})")
            continue
        if not same:
            problems.append(f"{what} {path} differs from the launching host's")
    out = expect.get("output")
    if out:
        problems += _check_output(Path(out["path"]), int(out["bytes"]))
    return problems


def _check_output(out: Path, need: int) -> list[str]:
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if out.exists():
        try:
            with tempfile.NamedTemporaryFile(dir=out, prefix=".preflight-"):
                pass
        except OSError as err:
            return [f"output {out} not writable here ({err.strerror})"]
    elif not os.access(existing, os.W_OK | os.X_OK):
        return [f"output {out} cannot be created here ({existing} is not writable)"]
    free = free_bytes(existing)
    if free < need:
        return [f"output {out}: {free / GiB:.1f} GiB free here, the plan writes {need / GiB:.1f} GiB (checkpoints "
                "and export; see `medtrain plan`, or lower keep_checkpoints)"]
    return []
