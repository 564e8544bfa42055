"""gpu_report.json and gpu_report.md from what bench/gpu/check.sh left in OUT: the GPU, the gpu-marked tests'
outcome and the benchmark figures against the targets (MFU >= 40% for the 1B Llama in bf16, medtrain >= 1.0x the
HF Trainer, peak memory within 15% of `medtrain plan`).

    python bench/gpu/report.py OUT SECONDS
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def tests(xml: Path) -> dict:
    if not xml.is_file():
        return {"ran": False}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {"ran": True, **counts, "failed": failed}


def main() -> None:
    out, seconds = Path(sys.argv[1]), float(sys.argv[2])
    gpu = (out / "gpu.txt").read_text().strip().splitlines() if (out / "gpu.txt").is_file() else []
    train, gen = _json(out / "gpu_train.json"), _json(out / "gpu_eval.json").get("generation", {})
    checks = {
        "mfu_ge_40pct": train.get("mfu", 0) >= 0.40 if train else None,
        "ratio_vs_hf_trainer_ge_1": train.get("ratio", 0) >= 1.0 if train else None,
        "peak_mem_within_15pct_of_plan": abs(train["peak_vs_plan"] - 1) <= 0.15 if train.get("peak_vs_plan")
        else None,
    }
    report = {"gpu": gpu[0] if gpu else "unknown", "seconds": seconds, "tests": tests(out / "pytest_gpu.xml"),
              "train": train, "generation": gen, "targets": checks}
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2) + "\n")
    t = report["tests"]
    lines = [f"# GPU acceptance kit — {report['gpu']} ({seconds:.0f} s)", ""]
    lines.append(f"pytest -m gpu: {t.get('tests', 0)} tests, {t.get('failures', 0)} failed, {t.get('errors', 0)} "
                 f"errors, {t.get('skipped', 0)} skipped" if t["ran"] else "pytest -m gpu: did not run")
    lines += [f"- failed: {name}" for name in t.get("failed", [])]
    if train:
        lines += ["", "| model | seq | batch | tok/s | HF Trainer tok/s | ratio | TFLOP/s/GPU | MFU | HFU | peak GiB | "
                  "plan GiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {train['model']} {train['precision']} | {train['seq_len']} | {train['global_batch']} | "
                  f"{train['medtrain_tokens_per_s']:,.0f} | {train['hf_trainer_tokens_per_s']:,.0f} | "
                  f"{train['ratio']:.2f} | {train.get('tflops_per_gpu', 0):.1f} | {100 * train.get('mfu', 0):.1f}% | "
                  f"{100 * train.get('hfu', 0):.1f}% | {train.get('peak_mem_gib', 0):.1f} | "
                  f"{train.get('plan_mem_gib') or 0:.1f} |"]
    if gen:
        lines += ["", f"CMExam-style generation ({gen['max_new_tokens']} new tokens, batch {gen['batch_size']}): "
                  f"{gen['batched_q_per_s']:.2f} q/s batched vs {gen['one_at_a_time_q_per_s']:.2f} q/s one at a "
                  f"time ({gen['speedup']:.1f}x)"]
    lines += ["", "targets: " + ", ".join(f"{k} {'met' if v else 'NOT met' if v is False else 'not measured'}"
                                          for k, v in checks.items()), ""]
    (out / "gpu_report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
