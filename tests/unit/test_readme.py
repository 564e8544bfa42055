"""README.md is the user's front door: small, in the order a new user needs it, with every link resolving; the
developer's material lives in CONTRIBUTING.md and docs/."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
ORDER = ["## Install", "## Five minutes", "## The paper at full scale", "## Concepts", "## Operating a run",
         "## Experiment tracking", "## Troubleshooting", "## Measured", "## From a checkout"]


def test_readme_is_under_20_kb_and_in_a_new_users_order():
    assert len(README.encode("utf-8")) < 20_000
    positions = [README.index(heading) for heading in ORDER]
    assert positions == sorted(positions)
    assert "medtrain demo --quick" in README and "bench/README.md" in README
    checkout = README[README.index("## From a checkout"):]
    assert "make demo" in checkout and "make test" in checkout
    for concept in ("**Recipes.**", "**The run directory.**", "**Lineage.**", "**Conventions.**"):
        assert concept in README


def test_readme_keeps_the_developers_material_out():
    for developer in ("test-fast", "gpu-rehearsal", "tests/system", "found while building"):
        assert developer not in README, developer


def test_every_relative_link_resolves():
    for doc in [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name}: {target}"
