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


# the libraries whose lower bounds in pyproject.toml are the versions CI and `make gpu-rehearsal` actually test
TESTED_PACKAGES = ("torch", "transformers", "deepspeed")


def below_bounds(requirements: list[str], installed: dict[str, str]) -> list[str]:
    """`name version (tested: specifier)` for each of TESTED_PACKAGES whose installed version falls outside its
    requirement; local labels (+cu130, +cpu) do not count."""
    from packaging.requirements import Requirement

    out = []
    for req in (Requirement(r) for r in requirements):
        have = installed.get(req.name.lower())
        if req.name.lower() in TESTED_PACKAGES and have and not req.marker \
                and not req.specifier.contains(have.split("+")[0], prereleases=True):
            out.append(f"{req.name} {have} (tested: {req.specifier})")
    return out


def untested_versions() -> list[str]:
    """Installed versions below the bounds medtrain's own metadata states (pyproject's dependencies). pip keeps
    them out, but an install with --no-deps (the GPU machine's image, a cluster's module system) does not: one
    line then tells the user they are on versions nobody has tested, before a failure somewhere deep."""
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        wanted = requires("medtrain") or []
    except PackageNotFoundError:  # running from a bare source tree
        return []
    installed = {}
    for name in TESTED_PACKAGES:
        try:
            installed[name] = version(name)
        except PackageNotFoundError:
            pass
    return below_bounds(wanted, installed)


def missing_requirements() -> list[str]:
    """medtrain's declared runtime dependencies that this environment lacks, as `pip install` arguments. A rank
    imports some of them only deep inside transformers (accelerate for a model loaded into ZeRO-3 shards); an
    install with --no-deps, or a cluster module missing one, would otherwise fail minutes into every rank."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    try:
        wanted = [Requirement(r) for r in requires("medtrain") or []]
    except PackageNotFoundError:  # a bare source tree: nothing declared to check against
        return []
    missing = []
    for req in wanted:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra
        try:
            version(req.name)
        except PackageNotFoundError:
            missing.append(str(req))
    return missing


def missing_requirements_problem() -> str | None:
    missing = missing_requirements()
    if not missing:
        return None
    return (f"missing Python package(s) {', '.join(missing)}; install with: pip install "
            + " ".join(f"'{m}'" for m in missing))


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "deepspeed": package_version("deepspeed"),
        "transformers": package_version("transformers"),
        "medtrain": core.__version__,
        "commit": git_commit(),
    }
