"""The demo at its smallest setting, as CI runs it: every table cell the number its eval measured, a valid PNG,
exported models that load with transformers, and a second run that reuses what the first one made."""

import re

import pytest
from train_fixtures import run_installed


@pytest.fixture(scope="module")
def demo(tmp_path_factory, installed_wheel):
    """From the installed wheel, outside the repository: the demo needs nothing of the checkout."""
    work = tmp_path_factory.mktemp("demo")
    proc = run_installed(installed_wheel, "demo", "--workdir", str(work), "--quick")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work, proc.stdout


@pytest.mark.launch
def test_demo_report_table_shows_what_each_eval_measured(demo):
    """Each Table 3 row of the report holds, to its two decimals, the accuracy and F1 in the results.json of that
    cell's evals, and says the extraction and question count behind them."""
    import json

    work, stdout = demo
    report, _, clean = (work / "report" / "report.md").read_text().partition("Clean subsets")
    assert str(work / "report" / "report.md") in stdout
    rows = [line for line in report.splitlines() if re.match(r"\| \d+ \| (yes|no) \|", line)]
    assert [tuple(r.split("|")[1:3]) for r in rows] == [(f" {s} ", f" {sft} ") for s in (0, 3, 6)
                                                        for sft in ("no", "yes")]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        step, sft = int(cells[0]), cells[1] == "yes"
        evals = work / "sweep" / f"step_{step:06d}" / ("sft_eval" if sft else "base")
        m = {t: json.loads((evals / f"eval_{t}" / "results.json").read_text()) for t in ("cmexam", "mmlu", "cmmlu")}
        measured = [m["cmexam"]["metrics"]["acc"], m["cmexam"]["metrics"]["weighted_f1"], m["mmlu"]["metrics"]["acc"],
                    m["cmmlu"]["metrics"]["acc"]]
        assert cells[2:6] == [f"{v:.2f}" for v in measured], row
        assert f"{'hard' if sft else 'paper'} extraction, {m['cmexam']['metrics']['n']:,} q" in cells[6], row
    assert "![loss curve](loss_curve.png)" in clean  # the loss curve follows the tables


@pytest.mark.launch
def test_demo_sweep_checks_its_training_data_and_reports_clean_subsets(demo):
    """sweep --contamination: one check per training dataset (the continual and the SFT data) against the three
    benchmarks, and each cell's clean subset scored from its outputs without the flagged questions."""
    import json

    work, _ = demo
    checks = work / "sweep" / "contamination"
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sorted(checks.glob("*/summary.json"))}
    assert sorted(summaries) == ["0_huatuo", "1_cmexam_reasoning"]
    for summary in summaries.values():
        assert {t: v["checked"] for t, v in summary["tasks"].items()} == {"cmexam": 42, "mmlu": 86, "cmmlu": 86}
    flagged = [json.loads(x) for x in (checks / "contaminated.jsonl").read_text().splitlines()]
    sweep = json.loads((work / "sweep" / "sweep.json").read_text())
    assert sweep["contamination"] == str(checks / "contaminated.jsonl") and all("clean" in r for r in sweep["rows"])
    for cell in sorted((work / "sweep").glob("step_*/*/eval_*_clean")):
        clean = json.loads((cell / "results.json").read_text())
        full = json.loads((cell.with_name(cell.name[:-len("_clean")]) / "results.json").read_text())
        left_out = sum(f["task"] == clean["task"] for f in flagged)
        assert clean["excluded"]["questions"] <= left_out and clean["scored_from"] == str(cell.with_name(
            cell.name[:-len("_clean")]))
        assert clean["metrics"]["n"] == full["metrics"]["n"] - clean["excluded"]["questions"]
    report = (work / "report" / "report.md").read_text()
    assert "Clean subsets" in report and (work / "sweep" / "table3_clean.md").is_file()


@pytest.mark.launch
def test_demo_continual_run_logs_a_validation_curve_on_the_held_out_split(demo):
    import json

    from medtrain.train.metrics import read_metrics

    work, _ = demo
    val = [r for r in read_metrics(work / "runs" / "continual" / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6]  # eval_every 3 and the end
    assert all(r["val_tokens"] > 0 and 0 < r["val_loss"] < 20 for r in val)
    held = json.loads((work / "data" / "huatuo" / "val" / "manifest.json").read_text())
    train = json.loads((work / "data" / "huatuo" / "manifest.json").read_text())
    assert held["split"]["val_docs"] == held["num_docs"] > 0 and train["split"]["train_docs"] == train["num_docs"]
    assert "validation loss" in (work / "report" / "report.md").read_text()


@pytest.mark.launch
def test_demo_loss_curve_is_a_valid_png(demo):
    from PIL import Image

    work, _ = demo
    with Image.open(work / "report" / "loss_curve.png") as im:
        im.verify()
        assert im.format == "PNG"


@pytest.mark.launch
def test_demo_exported_models_load_with_transformers_and_carry_lineage(demo):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    work, _ = demo
    exports = sorted(work.glob("sweep/step_*/sft/export")) + [work / "runs" / "continual" / "export"]
    assert len(exports) == 4
    for export in exports:
        AutoModelForCausalLM.from_pretrained(export, local_files_only=True)
        AutoTokenizer.from_pretrained(export, local_files_only=True)
        lineage = json.loads((export / "lineage.json").read_text())
        assert lineage["versions"]["commit"] and lineage["datasets"][0]["manifest_sha256"]
    sft = json.loads((work / "sweep" / "step_000003" / "sft" / "export" / "lineage.json").read_text())
    assert sft["continual_checkpoint_step"] == 3 and sft["template"]["name"] == "cmexam_with_reasoning"
    results = json.loads((work / "sweep" / "step_000003" / "sft_eval" / "eval_cmexam" / "results.json").read_text())
    assert results["lineage"]["step"] == sft["step"] and results["extract"] == "hard"


@pytest.mark.launch
def test_second_demo_run_reuses_prepared_data_and_finished_cells(demo, installed_wheel):
    work, _ = demo
    proc = run_installed(installed_wheel, "demo", "--workdir", str(work), "--quick")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "reusing prepared data" in proc.stdout and "reusing continual run" in proc.stdout
    assert "done with the same settings, reusing" in proc.stdout and "SFT from step" not in proc.stdout


@pytest.mark.launch
def test_report_paper_on_the_demo_sweep_lists_its_cells_without_pairing_them(demo, installed_wheel):
    """The installed wheel carries the paper's tables; the demo's random tiny Llama at steps 0/3/6 matches none
    of the paper's rows, and the report says so instead of pairing them."""
    work, _ = demo
    proc = run_installed(installed_wheel, "report", str(work / "sweep"), "--paper", "--out", str(work / "paper"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (work / "paper" / "report.md").read_text()
    assert "## Beside the paper (Guo & Hua (2023)" in text and "No cell of this report has a counterpart" in text
    assert text.count("model family not one of the paper’s") == 6  # steps 0, 3, 6, each without and with SFT
