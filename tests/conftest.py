from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from token_data import token_datasets  # noqa: E402
from train_fixtures import CONT_RECIPE, CONTINUAL, check, cli, launch_args, make_tiny_data  # noqa: E402

TIERS = ("unit", "integration", "system")
# fixtures that start DeepSpeed ranks, clusters or a fresh environment: only the system tier may ask for them
SYSTEM_FIXTURES = {"continual_run", "sft_run", "fp16_run", "runs", "loopback_cluster", "slurm_cluster",
                   "installed_wheel", "demo"}


def pytest_collection_modifyitems(config, items):
    """The tier is the folder: tests/unit (in-process, tiny objects), tests/integration (real tokenizers, prep,
    tiny models, lm-eval parity), tests/system (launches, clusters, faults, the wheel, the demo). Each test is
    marked with its folder's name, system tests with `launch` too; a test outside the three folders, or a
    faster tier's test that starts ranks, is an error rather than a slow `make test-fast`."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/system")
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "system":
            item.add_marker(pytest.mark.launch)
        elif item.get_closest_marker("launch") or SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
            raise pytest.UsageError(f"{item.nodeid}: starts DeepSpeed ranks or a cluster, so it belongs in "
                                    "tests/system (make test-fast must stay fast)")


def shared_data(*parts: str) -> Path:
    """A file of ../shared/data; missing is a failure under CI and a skip elsewhere."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing (CI runs with ../shared/data beside the clone)")
        pytest.skip(f"{path} is missing")
    return path


def _cluster_fixture(start_name: str, module: str, folder: str):
    """A session fixture that starts a throwaway cluster (tests/cluster.py, tests/slurm_cluster.py) once and stops
    it at the end."""
    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory):
        import importlib

        cluster = getattr(importlib.import_module(module), start_name)(tmp_path_factory.mktemp(folder))
        yield cluster
        cluster.stop()
    return fixture


loopback_cluster = _cluster_fixture("start_loopback_cluster", "cluster", "cluster")
slurm_cluster = _cluster_fixture("start_slurm_cluster", "slurm_cluster", "slurm")


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory) -> Path:
    """A real Hugging Face Llama directory (random weights, named shape "tiny") with a locally trained tokenizer."""
    from medtrain.data_prep.tokenizer import train_bpe_tokenizer
    from medtrain.train.model_dir import init_model_dir

    root = tmp_path_factory.mktemp("hf")
    texts = [p.read_text() for p in (REPO / "data_prep" / "samples").rglob("*.csv")]
    tok = train_bpe_tokenizer(texts, root / "tok", vocab_size=600)
    return init_model_dir("tiny", tok, root / "model", seed=0)


@pytest.fixture(scope="session")
def token_data(tmp_path_factory) -> dict[str, Path]:
    """Datasets written straight in the on-disk format (tests/token_data.py): no tokenizer, no prep."""
    return token_datasets(tmp_path_factory.mktemp("token_data"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The suite's one tiny data set and tokenizer (BPE, vocabulary 800): continual and SFT data prepared once.
    Tests read it; a test that changes data copies it first."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_sets(tiny) -> list[str]:
    """`--set` arguments that point a tiny recipe at the tiny data and tokenizer (--check verifies both)."""
    return ["--set", f"data={tiny['huatuo']}", "--set", f"tokenizer={tiny['tok']}", "--set", "val_data=null"]


@pytest.fixture(scope="session")
def continual_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "continual"
    proc = check(cli(*launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *CONTINUAL)))
    (out.parent / "console.txt").write_text(proc.stdout + proc.stderr)  # what the user saw (test_train.py)
    return out



def _source_of(name: str) -> Path:
    """A wheel member's source file: medtrain/core/x.py is core/x.py (pyproject's package-dir)."""
    parts = Path(name).parts
    if len(parts) > 2 and parts[1] in ("core", "launch", "data_prep", "eval", "recipes"):
        return REPO.joinpath(*parts[1:])
    return REPO.joinpath(*parts)


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory) -> dict:
    """medtrain as a user gets it, the way README's "Installing" says: `pip wheel --no-deps .`, a fresh virtual
    environment with nothing of this one's, the CPU torch first, then the wheel with its dependencies resolved
    by pip from its declared metadata (pip's cache keeps it to about a minute); run from a directory outside the
    repository. A dependency the code imports but pyproject does not declare fails here, as it would for a user."""
    import subprocess

    import torch

    root = tmp_path_factory.mktemp("wheel")
    # setuptools stages a wheel's files in build/lib and never removes one whose source is gone: a module moved
    # to another room would ship twice
    for stale in [REPO / "build" / "lib", *(REPO / "build").glob("bdist.*")]:
        shutil.rmtree(stale, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(root / "dist"), str(REPO)], check=True, capture_output=True, text=True)
    wheel = next((root / "dist").glob("medtrain-*.whl"))
    shipped = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")]
    orphans = [n for n in shipped if not _source_of(n).is_file()]
    assert shipped and not orphans, f"the wheel ships modules without a source: {orphans}"
    env_dir = root / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # the CPU build on this machine's disk, as in `make setup`
    for what in ([torch_pin], [str(wheel)]):
        proc = subprocess.run([str(py), "-m", "pip", "install", "-q", *what], capture_output=True, text=True)
        assert proc.returncode == 0, f"pip install {' '.join(what)}: {proc.stderr[-3000:]}"
    outside = root / "elsewhere"
    outside.mkdir()
    return {"wheel": wheel, "python": py, "bin": env_dir / "bin", "cwd": outside}
