"""The versions medtrain states are the versions it tests: pyproject's lower bounds for torch and transformers are
the GPU machine's image that `make gpu-rehearsal` imitates, and anything older is named in one line."""

import re
from pathlib import Path

from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.core import __version__
from medtrain.core.provenance import below_bounds, declared_requirements, package_version, untested_versions

REPO = Path(__file__).resolve().parents[2]


def _pyproject_bounds() -> dict[str, str]:
    text = (REPO / "pyproject.toml").read_text()
    return dict(re.findall(r'"(torch|transformers|deepspeed)>=([0-9.]+)"', text))


def test_lower_bounds_are_the_rehearsed_image():
    image = dict(re.findall(r"^(torch|transformers)==([0-9.]+)$", (REPO / "bench/gpu/image.txt").read_text(), re.M))
    bounds = _pyproject_bounds()
    for name, pinned in image.items():
        assert pinned.startswith(bounds[name]), f"pyproject says {name}>={bounds[name]}, the rehearsal tests {pinned}"
    kit = (REPO / "bench/gpu/make_kit.sh").read_text()
    assert f"deepspeed=={bounds['deepspeed']}" in kit, "the kit's deepspeed is the lowest stated one"


def test_older_versions_are_named_with_what_is_tested():
    reqs = ["torch>=2.11", "transformers>=5.17", "deepspeed>=0.19.8", "numpy>=1.26", 'lm-eval==0.4.13; extra == "test"']
    assert below_bounds(reqs, {"torch": "2.11.0+cu130", "transformers": "5.17.0", "deepspeed": "0.19.8"}) == []
    assert below_bounds(reqs, {"torch": "2.10.0+cu128", "transformers": "4.57.1", "deepspeed": "0.19.8",
                               "numpy": "1.0"}) == ["torch 2.10.0+cu128 (tested: >=2.11)",
                                                    "transformers 4.57.1 (tested: >=5.17)"]


def test_this_environment_is_tested_and_the_cli_says_nothing():
    """Checked against medtrain's installed metadata (a bare source tree has none, and would check nothing)."""
    declared = declared_requirements()
    assert declared is not None, "medtrain is not installed: `make setup` installs it"
    assert set(_pyproject_bounds()) <= {re.split(r"[<>=!~ ;]", r)[0] for r in declared}
    assert untested_versions() == []
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and "untested" not in r.output
    assert r.output.startswith(f"medtrain {__version__} (") and f"torch {package_version('torch')}" in r.output
