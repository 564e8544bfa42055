"""Models, tokenizers and data sets by Hugging Face id through the real hub cache (offline, a snapshot layout the
test builds as huggingface_hub writes it; nothing mocked)."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medtrain.cli import app

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data_prep" / "samples"


def _snapshot(cache: Path, kind: str, hub_id: str, commit: str) -> Path:
    """A repository in the hub cache laid out as huggingface_hub writes it: refs/main names the commit whose
    snapshot folder holds the files."""
    repo = cache / f"{kind}--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, hf_model):
    """An offline hub cache holding a model (with its tokenizer) and the Huatuo data set in two hub forms."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    model = _snapshot(cache, "models", "acme/tiny-llama", "a" * 40)
    for f in hf_model.iterdir():
        if f.is_file():
            shutil.copy2(f, model / f.name)
    jsonl = _snapshot(cache, "datasets", "acme/huatuo_encyclopedia_qa", "b" * 40)
    shutil.copy2(SAMPLES / "huatuo_sample.jsonl", jsonl / "train_datasets.jsonl")
    shutil.copy2(SAMPLES / "huatuo_sample.jsonl", jsonl / "test_datasets.jsonl")
    import datasets

    parquet = _snapshot(cache, "datasets", "acme/huatuo_parquet", "c" * 40)
    (parquet / "data").mkdir()
    rows = [json.loads(line) for line in (SAMPLES / "huatuo_sample.jsonl").read_text().splitlines()]
    for row in rows:  # parquet holds one type per column: the hub copy's nested form, [[variant, ...]]
        row["questions"] = [q if isinstance(q, list) else [q] for q in row["questions"]]
    datasets.Dataset.from_list(rows).to_parquet(str(parquet / "data" / "train-00000-of-00001.parquet"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_models_tokenizers_and_data_by_hub_id_offline(hub_cache, tmp_path):
    runner = CliRunner()
    out = tmp_path / "huatuo"
    r = runner.invoke(app, ["prep", "huatuo", "--input", "acme/huatuo_encyclopedia_qa", "--tokenizer",
                            "acme/tiny-llama", "--out", str(out), "--seq-len", "128", "--workers", "1"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    (source,) = manifest["hub"]["inputs"]
    assert source["hub_id"] == "acme/huatuo_encyclopedia_qa" and source["revision"] == "b" * 40
    assert source["files"] == ["train_datasets.jsonl"]  # the train split, not the test file beside it
    assert manifest["hub"]["tokenizer"]["revision"] == "a" * 40

    pq = tmp_path / "huatuo_pq"
    r = runner.invoke(app, ["prep", "huatuo", "--input", "acme/huatuo_parquet", "--tokenizer", "acme/tiny-llama",
                            "--out", str(pq), "--seq-len", "128", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert np_tokens(pq) == np_tokens(out)  # the parquet copy holds the same records
    assert not list(tmp_path.glob(".*inputs*")), "the staging folder of converted inputs is left behind"

    hosts = tmp_path / "hosts"
    hosts.write_text("localhost slots=2\n")
    plan = runner.invoke(app, ["plan", "--recipe", "tiny/continual", "--hosts", str(hosts), "--set",
                               "model=acme/tiny-llama", "--set", "init=pretrained", "--set", f"data={out}",
                               "--set", "tokenizer=null"])
    assert plan.exit_code == 0 and "acme/tiny-llama" in plan.output, plan.output
    dry = runner.invoke(app, ["launch", "--recipe", "tiny/continual", "--hosts", str(hosts), "--launcher", "local",
                              "--set", "model=acme/tiny-llama", "--set", "init=pretrained", "--set", f"data={out}",
                              "--set", f"output_dir={tmp_path / 'run'}", "--set", "tokenizer=null", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "acme/tiny-llama@aaaaaaaaaaaa" in dry.output  # the weights line names the id and commit used


def np_tokens(dataset: Path) -> list[int]:
    import numpy as np

    return np.load(dataset / "tokens.npy").tolist()


def test_a_hub_id_missing_offline_names_the_fetch_command(hub_cache, tmp_path, tiny_sets):
    runner = CliRunner()
    r = runner.invoke(app, ["prep", "huatuo", "--input", str(SAMPLES / "huatuo_sample.jsonl"), "--tokenizer",
                            "acme/not-here", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "hf download acme/not-here" in r.output
    assert not (tmp_path / "x").exists()
    r = runner.invoke(app, ["prep", "huatuo", "--input", "acme/no-data", "--tokenizer", "acme/tiny-llama",
                            "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "hf download acme/no-data --repo-type dataset" in r.output
    r = runner.invoke(app, ["launch", "--hosts", str(REPO / "hostfiles/v100x20"), "--dry-run", *tiny_sets,
                            "--set", f"output_dir={tmp_path / 'run'}"])
    assert r.exit_code == 0 and "recipe: paper/continual_llama2_13b" in r.output
    assert "not in the cache yet" in r.output and "hf download meta-llama/Llama-2-13b-hf" in r.output
    plan = runner.invoke(app, ["plan", "--recipe", "paper/continual_llama2_13b", "--hosts",
                               str(REPO / "hostfiles/v100x20")])
    assert plan.exit_code == 0 and "13.02 B params" in plan.output  # a known id is sized without its files
