"""A layout tools can read: basedpyright (a static analyser; it runs no import hook) resolves every `medtrain.*`
import in the repository to its file, through the link tree of the strict editable install `make setup` makes.
A control first: the same check names an import that does not exist, so a silent analyser cannot pass."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASEDPYRIGHT = shutil.which("basedpyright", path=str(Path(sys.executable).parent))


def _unresolved(*paths: str, cwd: Path = REPO) -> list[str]:
    out = subprocess.run([BASEDPYRIGHT, "--outputjson", "--pythonpath", sys.executable, *paths], cwd=cwd,
                         capture_output=True, text=True)
    report = json.loads(out.stdout)
    return [f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}" for d in report["generalDiagnostics"]
            if d.get("rule") == "reportMissingImports"]


pytestmark = pytest.mark.skipif(BASEDPYRIGHT is None, reason="basedpyright is not installed (make setup installs it)")


def test_the_check_names_an_import_that_does_not_resolve(tmp_path):
    (tmp_path / "probe.py").write_text("import medtrain.core.recipe\nimport medtrain.core.no_such_module\n")
    (tmp_path / "pyproject.toml").write_text('[tool.basedpyright]\ntypeCheckingMode = "off"\n'
                                             'reportMissingImports = "error"\n')
    found = _unresolved("probe.py", cwd=tmp_path)
    assert len(found) == 1 and "medtrain.core.no_such_module" in found[0], found


def test_every_medtrain_import_in_the_repository_resolves_to_its_file():
    unresolved = _unresolved()
    assert not unresolved, (f"{len(unresolved)} unresolved, first {unresolved[:3]}; a module added since `make setup`"
                            " needs the link tree refreshed: `make links`")
