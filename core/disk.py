"""A full disk (or quota) is a problem the user fixes: one line naming the mount, what was being written and the
room there, instead of a traceback from whichever library hit it (numpy: "199759 requested and 165888 written";
safetensors: "IoError(Os { code: 28 ... })"; the kernel: ENOSPC)."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medtrain.core.errors import UserError

_FULL = re.compile(r"No space left|Disk quota exceeded|code: (28|122)\b|\d+ requested and \d+ written|"
                   r"StorageFull|file write failed")


class DiskFullError(UserError):
    """Exit 2: the disk or quota is full; nothing half-written is left behind (the writers stage and clean)."""

    local = True


def mount_of(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(mount_of(path)).free


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception's chain, or a library's own words for it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if _FULL.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(out: Path, needed: int | None = None) -> DiskFullError:
    mount = mount_of(out)
    need = f"about {fmt_bytes(needed)} needed, " if needed else ""
    return DiskFullError(f"{mount}: no space left writing {out} ({need}{fmt_bytes(free_bytes(out))} free); nothing "
                         "was kept; free space there or choose an --out on another disk")


def require_space(out: Path, needed: int, what: str) -> None:
    """Before a long job: refuse at once when `out`'s disk cannot hold what it will write."""
    free = free_bytes(out)
    if needed > free:
        raise DiskFullError(f"{mount_of(out)}: {what} needs about {fmt_bytes(needed)} for {out}, "
                            f"{fmt_bytes(free)} free; free space there or choose an --out on another disk")


@contextmanager
def disk_full_as_error(out: Path, needed: int | None = None) -> Iterator[None]:
    """Inside the block, a full disk becomes DiskFullError naming `out` and what it needed."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(out, needed) from e
        raise
