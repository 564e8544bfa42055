"""One way to make a file or directory appear: build it beside the target, then rename it into place.

A reader (another rank, a resumed sweep, a user's `ls`) sees either the old complete thing or the new complete
thing, never half of one; a run killed while writing leaves only a hidden `.NAME.tmp-PID` sibling.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from medtrain.core.errors import UserError


class ExistsError(UserError):
    """The target exists and the caller did not ask to replace it."""


def publish_text(path: Path, text: str) -> Path:
    """Write text beside `path` and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def publish_json(path: Path, obj: Any) -> Path:
    return publish_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def staging_dir(out: Path) -> Path:
    """An empty, hidden sibling of `out` to build a directory in (created)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: Path, out: Path, *, overwrite: bool, hint: str = "pass --overwrite to replace it") -> Path:
    """Rename a finished staging directory into place. An existing `out` is moved aside first and removed only
    after the new one is in place, so a crash at any point leaves a complete directory (old or new)."""
    tmp, out = Path(tmp), Path(out)
    if out.exists() and not overwrite:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExistsError(f"{out} already exists; {hint}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        os.replace(tmp, out)
        return out
    if not out.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExistsError(f"{out} exists and is not a directory; remove it or choose another --out")
    trash = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(out, trash)
    os.replace(tmp, out)
    shutil.rmtree(trash, ignore_errors=True)
    return out
