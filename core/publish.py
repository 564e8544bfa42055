"""One way to make a file or directory appear: build it beside the target, then rename it into place.

A reader (another rank, a resumed sweep, a user's `ls`) sees either the old complete thing or the new complete
thing, never half of one; a run killed while writing leaves only a hidden `.NAME.tmp-PID` sibling.

Every directory published here carries OUTPUT_MARKER (what made it, and with which command), and `--overwrite`
replaces only an empty directory or one that carries it: a typo in `--out` (a home directory, a project folder)
is refused instead of moved aside and deleted. What is published honours the umask, so a group can read a shared
export (safetensors writes its file 0600 whatever the umask).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medtrain.core.errors import UserError

OUTPUT_MARKER = ".medtrain-output.json"


class ExistsError(UserError):
    """The target exists and the caller did not ask to replace it (or it is not medtrain's to replace)."""


def umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def honour_umask(root: Path) -> None:
    """Give `root` and everything under it the modes the umask asks for (files 0666, directories 0777, less the
    umask; executable bits kept): libraries that write privately do not decide who may read a run."""
    mask = umask()
    root = Path(root)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode & 0o777
        want = (0o777 if p.is_dir() or mode & 0o111 else 0o666) & ~mask
        if mode != want:
            os.chmod(p, want)


def publish_text(path: Path, text: str) -> Path:
    """Write text beside `path` and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written sibling
        raise
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


def refuse_existing(out: Path, overwrite: bool, what: str = "directory") -> None:
    """One rule for every command that writes an output: an existing one is replaced only when asked, and only
    when it is medtrain's own (check_replaceable), checked before any work starts (`medtrain sweep` is the
    exception: it continues the sweep directory it is given)."""
    if Path(out).exists() and not overwrite:
        raise ExistsError(f"{out} already exists; pass --overwrite to replace it")
    if overwrite:
        check_replaceable(out, what=what)


def check_replaceable(out: Path, *, what: str = "directory") -> None:
    """Refuse to replace anything medtrain did not make: `out` may go only when it is an empty directory or one
    carrying OUTPUT_MARKER (for a file output: a regular file), and never when it is the current directory, a
    parent of it, the home directory or a filesystem root."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    real = out.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if real == cwd or real in cwd.parents:
        raise ExistsError(f"{out}: refusing to replace the current directory or a parent of it; choose another --out")
    if real == home or os.path.ismount(real):
        raise ExistsError(f"{out}: refusing to replace {'the home directory' if real == home else 'a filesystem root'}"
                          "; choose another --out")
    if what == "file":
        if not out.is_file():
            raise ExistsError(f"{out} exists and is not a file; --overwrite replaces only a file here: choose "
                              "another path")
        return
    if not out.is_dir():
        raise ExistsError(f"{out} exists and is not a directory; remove it or choose another --out")
    if (out / OUTPUT_MARKER).is_file():
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise ExistsError(f"{out} holds files medtrain did not write ({shown}; no {OUTPUT_MARKER}); --overwrite "
                          "replaces only medtrain's own output: choose another --out, or move them away yourself")


def mark_output(tmp: Path, kind: str) -> None:
    """The marker that makes a directory medtrain's to replace: what it is and the command that made it."""
    record = {"kind": kind, "command": " ".join(["medtrain", *sys.argv[1:]]), "pid": os.getpid(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (Path(tmp) / OUTPUT_MARKER).write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")


def publish_dir(tmp: Path, out: Path, *, overwrite: bool, kind: str = "output",
                hint: str = "pass --overwrite to replace it") -> Path:
    """Rename a finished staging directory into place. An existing `out` is moved aside first and removed only
    after the new one is in place, so a crash at any point leaves a complete directory (old or new); it must be
    medtrain's own (check_replaceable)."""
    tmp, out = Path(tmp), Path(out)
    try:
        if out.exists() and not overwrite:
            raise ExistsError(f"{out} already exists; {hint}")
        check_replaceable(out)
        mark_output(tmp, kind)
        honour_umask(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        os.replace(tmp, out)
        return out
    trash = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(out, trash)
    os.replace(tmp, out)
    shutil.rmtree(trash, ignore_errors=True)
    return out


@contextmanager
def staged_dir(out: Path, *, kind: str, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a staging sibling and publish it when the block ends; on any failure (a full disk, a
    bug, Ctrl-C) the sibling is removed, so nothing half-written is left beside `out`."""
    tmp = staging_dir(out)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, out, overwrite=overwrite, kind=kind)
