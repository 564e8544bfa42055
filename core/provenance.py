"""Where code and results came from: versions and the git commit, recorded in preflight, exports and results."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import medtrain.core as core


@cache
def git_commit() -> str:
    """The commit of the medtrain checkout ('unknown' outside git), with '+dirty' for uncommitted changes."""
    root = Path(core.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "deepspeed": package_version("deepspeed"),
        "transformers": package_version("transformers"),
        "medtrain": core.__version__,
        "commit": git_commit(),
    }
