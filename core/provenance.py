"""Where code and results came from: versions and the git commit, recorded in preflight, exports and results."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

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

    out = []
    for req in (Requirement(r) for r in requirements):
        have = installed.get(req.name.lower())
        if req.name.lower() in TESTED_PACKAGES and have and not req.marker \
                and not req.specifier.contains(have.split("+")[0], prereleases=True):
            out.append(f"{req.name} {have} (tested: {req.specifier})")
    return out


def declared_requirements() -> list[str] | None:
    """medtrain's runtime requirements as its installed metadata states them (pyproject's dependencies); None
    when running from a bare source tree, where nothing is declared to check against."""
    try:
        return metadata.requires("medtrain") or []
    except metadata.PackageNotFoundError:
        return None


def untested_versions() -> list[str]:
    """Installed versions below the bounds medtrain's own metadata states (pyproject's dependencies). pip keeps
    them out, but an install with --no-deps (the GPU machine's image, a cluster's module system) does not: one
    line then tells the user they are on versions nobody has tested, before a failure somewhere deep."""
    wanted = declared_requirements()
    if wanted is None:
        return []
    installed = {name: v for name in TESTED_PACKAGES if (v := package_version(name)) != "missing"}
    return below_bounds(wanted, installed)


def missing_requirements() -> list[str]:
    """medtrain's declared runtime dependencies that this environment lacks, as `pip install` arguments. A rank
    imports some of them only deep inside transformers (accelerate for a model loaded into ZeRO-3 shards); an
    install with --no-deps, or a cluster module missing one, would otherwise fail minutes into every rank."""

    wanted = [Requirement(r) for r in declared_requirements() or []]
    return [str(req) for req in wanted
            if (req.marker is None or req.marker.evaluate({"extra": ""}))  # an optional extra is not needed
            and package_version(req.name) == "missing"]


def missing_requirements_problem() -> str | None:
    missing = missing_requirements()
    if not missing:
        return None
    return (f"missing Python package(s) {', '.join(missing)}; install with: pip install "
            + " ".join(f"'{m}'" for m in missing))


def continual_step_in(lineage: dict | None) -> int | None:
    """The step of the nearest continual-pretraining run a lineage chain descends from (the node itself
    first); None when no node of the chain is one."""
    node = lineage
    while node:
        if node.get("stage") == "continual":
            return int(node.get("step", 0))
        node = node.get("base_lineage")
    return None


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "deepspeed": package_version("deepspeed"),
        "transformers": package_version("transformers"),
        "medtrain": core.__version__,
        "commit": git_commit(),
    }
