"""bench/gpu/report.py reads whatever check.sh left behind, in any state: a truncated junit file, a stage that
failed or never ran, figures that never came back. It must name the first failing stage and never call an
unmeasured target "NOT met"."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu" / "report.py"
_spec = importlib.util.spec_from_file_location("gpu_report", SCRIPT)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _run(out: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return (out / "gpu_report.md").read_text()


def _stages(out: Path, *rows: dict) -> None:
    (out / "stages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_truncated_junit_file_and_missing_figures_are_said_not_crashed_on(tmp_path):
    (tmp_path / "pytest_gpu.xml").write_text('<?xml version="1.0"?><testsuites><testsuite tests="3" fail')
    _stages(tmp_path, {"stage": "install", "status": "passed", "seconds": 3},
            {"stage": "pytest_gpu", "status": "timed out", "rc": 124, "seconds": 200, "tail": ["test_gpu.py ..."]})
    text = _run(tmp_path, "212")
    assert "pytest -m gpu: did not finish (junit file unreadable" in text
    assert "first failing stage: **pytest_gpu** (timed out)" in text and "test_gpu.py ..." in text
    assert "NOT met" not in text and text.count("not measured") == 3
    saved = json.loads((tmp_path / "gpu_report.json").read_text())
    assert saved["all_stages_passed"] is False and saved["first_failing_stage"]["stage"] == "pytest_gpu"


def test_measured_targets_are_judged_and_a_missing_figure_is_not(tmp_path):
    train = {"model": "llama-1b", "precision": "bf16", "seq_len": 2048, "global_batch": 8, "mfu": 0.35,
             "medtrain_tokens_per_s": 9000.0, "tflops_per_gpu": 300.0, "hfu": 0.45, "peak_mem_gib": 30.0,
             "plan_mem_gib": 28.0, "peak_vs_plan": 30 / 28, "hf_trainer_error": "HF Trainer run failed (exit 1)"}
    (tmp_path / "gpu_train.json").write_text(json.dumps(train))
    _stages(tmp_path, {"stage": "train_bench", "status": "failed", "rc": 1, "seconds": 80, "tail": []})
    checks = report.targets(train, rehearsal=False)
    assert checks == {"mfu_ge_40pct": False, "ratio_vs_hf_trainer_ge_1": None, "peak_mem_within_15pct_of_plan": True}
    text = _run(tmp_path, "100")
    assert "mfu_ge_40pct NOT met" in text and "ratio_vs_hf_trainer_ge_1 not measured" in text
    assert "HF Trainer half: HF Trainer run failed" in text and "| — |" in text  # the ratio that never came back


def test_a_rehearsal_judges_no_target_and_the_seconds_are_optional(tmp_path):
    (tmp_path / "gpu_train.json").write_text(json.dumps({"mfu": 0.9, "ratio": 2.0}))
    assert set(report.targets({"mfu": 0.9, "ratio": 2.0}, rehearsal=True).values()) == {None}
    text = _run(tmp_path)
    assert text.startswith("# GPU acceptance kit — unknown (0 s)") and "pytest -m gpu: did not finish (no junit" in text
    usage = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode != 0 and "usage:" in usage.stderr
