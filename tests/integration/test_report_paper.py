"""`medtrain report --paper`: the paper's rows beside the cells that match them (model family, continual step,
SFT mode and data), the difference, both sides' conventions; a cell without a counterpart is listed, not paired."""

import json
import shutil

from typer.testing import CliRunner

from medtrain.cli import app


def _results(model, out, cmexam=(44.0, 43.5), mmlu=56.0, cmmlu=43.0):
    """results.json as `medtrain eval` writes them (the fields the tables read)."""
    rows = [{"task": "cmexam", "model": str(model), "extract": "paper", "metrics": {"acc": cmexam[0],
             "weighted_f1": cmexam[1], "n": 6811}, "data": {"sha256": "c"}},
            {"task": "mmlu", "model": str(model), "scoring": "harness", "shots": 5,
             "metrics": {"acc": mmlu, "n": 14042}, "data": {"sha256": "m"}},
            {"task": "cmmlu", "model": str(model), "scoring": "harness", "shots": 5,
             "metrics": {"acc": cmmlu, "n": 11582}, "data": {"sha256": "c2"}}]
    for r in rows:
        (out / r["task"]).mkdir(parents=True)
        (out / r["task"] / "results.json").write_text(json.dumps(r))


def test_matching_cells_are_paired_with_the_paper_and_others_listed(hf_model, tiny, tmp_path):
    sft = tmp_path / "sft_750"
    shutil.copytree(hf_model, sft)
    (sft / "lineage.json").write_text(json.dumps({
        "stage": "sft", "base_model": "runs/continual/checkpoints/step_000750", "continual_checkpoint_step": 750,
        "template": {"name": "cmexam_with_reasoning", "version": 1}, "datasets": [{"path": str(tiny["cmexam"])}],
        "base_lineage": {"stage": "continual", "step": 750, "base_model": "meta-llama/Llama-2-13b-hf",
                         "base_lineage": None}}))
    _results(sft, tmp_path / "evals" / "sft")
    _results(hf_model, tmp_path / "evals" / "tiny", cmexam=(20.0, 10.0))
    r = CliRunner().invoke(app, ["report", str(tmp_path / "evals"), "--paper", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Beside the paper (Guo & Hua (2023), arXiv:2311.00204" in text
    row = next(line for line in text.splitlines() if "Table 3: Llama-2-13B, step 750" in line)
    assert "44.0 / 43.4 (+0.6)" in row and "43.5 / 43.0 (+0.5)" in row and "56.0 / 57.2 (-1.2)" in row
    assert "paper extraction, 6,811 q" in row  # our conventions beside the numbers
    assert "mmlu: 5-shot; scoring convention not stated" in text  # the paper's, as it states them
    assert f"- {hf_model}: model family not one of the paper’s (base tiny (random init, seed 0)), step 0, SFT none" \
        in text


def test_an_sft_model_outside_a_sweep_takes_its_step_from_the_lineage_chain_and_hub_models_their_id(hf_model, tiny,
                                                                                                    tmp_path):
    """An SFT run launched by hand on a continual checkpoint records no sweep step: its base's lineage (a
    continual run at step 1500) places it; a model evaluated by hub id is named id@revision, not by its snapshot
    path, in the paper section and the tables."""
    sft = tmp_path / "sft_by_hand"
    shutil.copytree(hf_model, sft)
    (sft / "lineage.json").write_text(json.dumps({
        "stage": "sft", "base_model": "runs/continual/export", "continual_checkpoint_step": None,
        "template": {"name": "cmexam_with_reasoning", "version": 1}, "datasets": [{"path": str(tiny["cmexam"])}],
        "base_lineage": {"stage": "continual", "step": 1500, "base_model": "/cache/snapshots/0123456789abcdef",
                         "base_source": {"hub_id": "meta-llama/Llama-2-13b-hf", "revision": "0123456789abcdef"},
                         "base_lineage": None}}))
    _results(sft, tmp_path / "evals" / "sft")
    base = tmp_path / "evals" / "base"
    _results(hf_model, base, cmexam=(20.0, 10.0))
    for r in base.glob("*/results.json"):
        rec = json.loads(r.read_text())
        rec["model_source"] = {"hub_id": "meta-llama/Llama-2-13b-hf", "revision": "fedcba9876543210aa",
                               "path": str(hf_model)}
        r.write_text(json.dumps(rec))
    r = CliRunner().invoke(app, ["report", str(tmp_path / "evals"), "--paper", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert any("Table 3: Llama-2-13B, step 1500" in line and str(sft) in line for line in text.splitlines())
    assert "Table 2" not in next(line for line in text.splitlines() if str(sft) in line)  # not beside "step 0"
    assert "- meta-llama/Llama-2-13b-hf@fedcba987654: model family" in text
    assert str(hf_model) not in text.split("## Beside the paper")[1]
