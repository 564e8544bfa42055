"""gpu_report.json and gpu_report.md from what bench/gpu/check.sh left in OUT, whatever state it is in: the stages
(the first failing one named with its last lines), the gpu-marked tests' outcome and the benchmark figures against
the targets (MFU >= 40% for the 1B Llama in bf16, medtrain >= 1.0x the HF Trainer, peak memory within 15% of
`medtrain plan`). A target whose figure never came back is "not measured", never "NOT met"; a rehearsal on the CPU
judges no target.

    python bench/gpu/report.py OUT [SECONDS] [REHEARSAL 0|1]
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stages(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append({"stage": "?", "status": "unreadable", "tail": [line[:200]]})
    return rows


def tests(xml: Path) -> dict:
    """The junit file's counts; a missing or truncated file (a stage killed mid-write) says so instead."""
    if not xml.is_file():
        return {"ran": False, "why": "no junit file"}
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        return {"ran": False, "why": f"junit file unreadable ({err})"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {"ran": False, "why": "junit file holds no testsuite"}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {"ran": True, **counts, "failed": failed}


def targets(train: dict, rehearsal: bool) -> dict:
    """True/False only for a figure that was measured on a GPU; None (not measured) otherwise."""
    if rehearsal:
        return {k: None for k in ("mfu_ge_40pct", "ratio_vs_hf_trainer_ge_1", "peak_mem_within_15pct_of_plan")}
    peak = train.get("peak_vs_plan")
    return {
        "mfu_ge_40pct": train["mfu"] >= 0.40 if "mfu" in train else None,
        "ratio_vs_hf_trainer_ge_1": train["ratio"] >= 1.0 if "ratio" in train else None,
        "peak_mem_within_15pct_of_plan": abs(peak - 1) <= 0.15 if peak else None,
    }


def _fmt(value, spec: str = ",.0f", scale: float = 1.0, suffix: str = "") -> str:
    return "—" if value is None else f"{value * scale:{spec}}{suffix}"


def render(report: dict) -> list[str]:
    kind = "rehearsal on the CPU (the device's software, no CUDA)" if report["rehearsal"] else report["gpu"]
    lines = [f"# GPU acceptance kit — {kind} ({report['seconds']:.0f} s)", ""]
    lines += ["| stage | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s.get('stage')} | {s.get('status')} | {s.get('seconds', '—')} |" for s in report["stages"]]
    failing = report["first_failing_stage"]
    if failing:
        lines += ["", f"first failing stage: **{failing['stage']}** ({failing.get('status')}"
                  f"{', ' + failing['reason'] if failing.get('reason') else ''}); its last lines:", "```",
                  *failing.get("tail", []), "```"]
    t = report["tests"]
    lines += ["", f"pytest -m gpu: {t['tests']} tests, {t['failures']} failed, {t['errors']} errors, {t['skipped']} "
              "skipped" if t["ran"] else f"pytest -m gpu: did not finish ({t['why']})"]
    lines += [f"- failed: {name}" for name in t.get("failed", [])]
    train = report["train"]
    if train:
        lines += ["", "| model | seq | batch | tok/s | HF Trainer tok/s | ratio | TFLOP/s/GPU | MFU | HFU | peak GiB | "
                  "plan GiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {train.get('model')} {train.get('precision')} | {train.get('seq_len')} | "
                  f"{train.get('global_batch')} | {_fmt(train.get('medtrain_tokens_per_s'))} | "
                  f"{_fmt(train.get('hf_trainer_tokens_per_s'))} | {_fmt(train.get('ratio'), '.2f')} | "
                  f"{_fmt(train.get('tflops_per_gpu'), '.1f')} | {_fmt(train.get('mfu'), '.1f', 100, '%')} | "
                  f"{_fmt(train.get('hfu'), '.1f', 100, '%')} | {_fmt(train.get('peak_mem_gib'), '.1f')} | "
                  f"{_fmt(train.get('plan_mem_gib'), '.1f')} |"]
        if train.get("hf_trainer_error"):
            lines += ["", f"HF Trainer half: {train['hf_trainer_error']}"]
    gen = report["generation"]
    if gen:
        lines += ["", f"CMExam-style generation ({gen['max_new_tokens']} new tokens, batch {gen['batch_size']}): "
                  f"{gen['batched_q_per_s']:.2f} q/s batched vs {gen['one_at_a_time_q_per_s']:.2f} q/s one at a "
                  f"time ({gen['speedup']:.1f}x)"]
    words = {True: "met", False: "NOT met", None: "not measured"}
    lines += ["", "targets: " + ", ".join(f"{k} {words[v]}" for k, v in report["targets"].items()), ""]
    return lines


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python bench/gpu/report.py OUT [SECONDS] [REHEARSAL 0|1]")
    out = Path(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    rehearsal = len(sys.argv) > 3 and sys.argv[3] == "1"
    gpu = (out / "gpu.txt").read_text().strip().splitlines() if (out / "gpu.txt").is_file() else []
    train, gen = _json(out / "gpu_train.json"), _json(out / "gpu_eval.json").get("generation", {})
    rows = stages(out / "stages.jsonl")
    report = {"gpu": gpu[0] if gpu else "unknown", "rehearsal": rehearsal, "seconds": seconds, "stages": rows,
              "first_failing_stage": next((s for s in rows if s.get("status") != "passed"), None),
              "all_stages_passed": bool(rows) and all(s.get("status") == "passed" for s in rows),
              "tests": tests(out / "pytest_gpu.xml"), "train": train, "generation": gen,
              "targets": targets(train, rehearsal)}
    (out / "gpu_report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = render(report)
    (out / "gpu_report.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
