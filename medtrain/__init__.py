"""medtrain: continual pretraining, SFT and evaluation of Llama-2 for medical QA on DeepSpeed ZeRO-3."""

from pathlib import Path as _Path

# Run from inside a checkout (`python -m medtrain`, a rank, a bench script or pytest with the repository root as
# the working directory), this folder is found before the installed copy, and medtrain.core & co. would be
# missing: the rooms live beside it, mapped under medtrain by pyproject's package-dir. Adding the checkout's
# root to our search path maps them the same way, so a checkout imports like the installed package.
_root = _Path(__file__).resolve().parent.parent
if (_root / "core" / "__init__.py").is_file() and 'name = "medtrain"' in (
        (_root / "pyproject.toml").read_text() if (_root / "pyproject.toml").is_file() else ""):
    __path__.append(str(_root))  # noqa: F821 (a package's own __path__)

from medtrain.core import __version__  # noqa: E402

__all__ = ["__version__"]
