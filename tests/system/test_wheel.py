"""medtrain installed like real software: one import name in the wheel, everything it reads inside it, and the
installed command run from outside the repository."""

import json
import subprocess
import zipfile
from pathlib import Path

from train_fixtures import run_installed

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data_prep" / "samples"


def test_the_wheel_has_one_top_level_name_and_carries_what_the_program_reads(installed_wheel):
    names = zipfile.ZipFile(installed_wheel["wheel"]).namelist()
    assert {n.split("/")[0] for n in names} == {"medtrain", "medtrain-0.1.0.dist-info"}
    for needed in ("medtrain/eval/tasks/cmexam.yaml", "medtrain/recipes/paper/continual_llama2_13b.yaml",
                   "medtrain/recipes/tiny/sft.yaml", "medtrain/data_prep/samples/cmexam_test.csv",
                   "medtrain/data_prep/samples/mmlu/test/clinical_knowledge_test.csv"):
        assert needed in names


def test_installed_medtrain_runs_outside_the_repository(installed_wheel, tmp_path):
    py = installed_wheel["python"]
    probe = "import medtrain.core, medtrain.eval.task as t; print(medtrain.core.__file__, t.TASKS_DIR)"
    where = subprocess.run([str(py), "-c", probe], cwd=installed_wheel["cwd"], capture_output=True, text=True,
                           check=True)
    assert str(REPO) not in where.stdout and "site-packages/medtrain/core" in where.stdout
    assert subprocess.run([str(py), "-c", "import core"], cwd=installed_wheel["cwd"], capture_output=True).returncode

    version = run_installed(installed_wheel, "--version")
    assert version.returncode == 0 and version.stdout.startswith("medtrain 0.1.0"), version.stderr
    listing = run_installed(installed_wheel, "recipes")
    assert "paper/continual_llama2_13b" in listing.stdout and "tiny/sft" in listing.stdout, listing.stderr
    hosts = tmp_path / "v100x20"
    hosts.write_text((REPO / "hostfiles" / "v100x20").read_text())
    plan = run_installed(installed_wheel, "plan", "--recipe", "paper/continual_llama2_13b", "--hosts", str(hosts))
    assert plan.returncode == 0 and "FITS" in plan.stdout and "13.02 B params" in plan.stdout, plan.stderr

    data = SAMPLES / "cmexam_test.csv"
    import csv

    rows = list(csv.DictReader(data.open(encoding="utf-8")))
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "output": f"答案: {r['Answer']}"}, ensure_ascii=False) + "\n"
                             for i, r in enumerate(rows)), encoding="utf-8")
    scored = run_installed(installed_wheel, "eval", "cmexam", "--predictions", str(preds), "--data", str(data),
                           "--out", str(tmp_path / "scored"))
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tmp_path / "scored" / "results.json").read_text())["metrics"]["acc"] == 100.0
