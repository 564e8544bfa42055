"""Tokenizers in the forms users hold them: the real Llama-2 tokenizer as SentencePiece's `tokenizer.model` and
as `tokenizer.json` is one tokenizer (judged by what it does), and every model directory medtrain writes carries
a complete tokenizer that AutoTokenizer loads to encode exactly as training did, BOS first."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import shared_data
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.data_prep.format import DatasetError, TokenDataset
from medtrain.data_prep.samples import sample_lines
from medtrain.data_prep.tokenizer import Encoder, tokenizer_fingerprint, tokenizer_identity, write_hf_tokenizer


@pytest.fixture(scope="module")
def llama2_model_only(tmp_path_factory):
    """Llama-2's tokenizer as a checkpoint directory may hold it: tokenizer.model and nothing else."""
    root = tmp_path_factory.mktemp("llama2_sp")
    shutil.copy2(shared_data("tokenizers", "llama2", "tokenizer.model"), root / "tokenizer.model")
    return root


def test_the_two_forms_of_llama2_are_one_tokenizer_and_another_vocabulary_is_not(llama2_model_only, tiny):
    fast = shared_data("tokenizers", "llama2", "derived_hf_fast")
    chinese = shared_data("tokenizers", "chinese-llama2")
    assert tokenizer_fingerprint(llama2_model_only) == tokenizer_fingerprint(fast)
    assert tokenizer_fingerprint(chinese) != tokenizer_fingerprint(fast)  # ids 0-31999 alike, 23,296 more
    assert tokenizer_fingerprint(tiny["tok"]) != tokenizer_fingerprint(fast)


def test_data_prepared_with_tokenizer_model_trains_with_its_tokenizer_json(llama2_model_only, tmp_path):
    from medtrain.data_prep.pipeline import prep
    from medtrain.data_prep.samples import DIR

    out = tmp_path / "h"
    prep("huatuo", [DIR / "huatuo_sample.jsonl"], llama2_model_only, out, seq_len=256, workers=1)
    fast = shared_data("tokenizers", "llama2", "derived_hf_fast")
    TokenDataset(out, expect_tokenizer=tokenizer_identity(fast))  # accepted: the same ids
    with pytest.raises(DatasetError, match="split text into different ids"):
        TokenDataset(out, expect_tokenizer=tokenizer_identity(shared_data("tokenizers", "chinese-llama2")))


@pytest.mark.parametrize("form", ["tokenizer.model only", "tokenizer.json", "local BPE"])
def test_an_export_carries_a_tokenizer_that_encodes_as_training_did_bos_first(form, llama2_model_only, tiny,
                                                                               tmp_path):
    from transformers import AutoTokenizer

    src = {"tokenizer.model only": llama2_model_only, "local BPE": tiny["tok"],
           "tokenizer.json": shared_data("tokenizers", "llama2", "derived_hf_fast")}[form]
    out = tmp_path / "export"
    out.mkdir()
    check = write_hf_tokenizer(src, out)
    assert check["equal"] == check["lines"] and check["bos_first"]
    names = {p.name for p in out.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert ("tokenizer.model" in names) == (form == "tokenizer.model only")
    assert json.loads((out / "tokenizer_config.json").read_text())["add_bos_token"] is True
    loaded = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    training = Encoder(src)
    lines = sample_lines(300)
    got = loaded(lines)["input_ids"]
    want = [[training.info.bos_id, *ids] for ids in training.encode_batch(lines)]
    assert len(lines) == 300 and got == want
    old = ids_under_transformers_4(out, lines)  # the lab that still runs 4.4x loads the same export
    assert old["transformers"].startswith("4.4") and old["ids"] == want, old["class"]


def ids_under_transformers_4(model_dir: Path, lines: list[str]) -> dict:
    python = Path(os.environ.get("MEDTRAIN_TF4_PYTHON", Path(__file__).parents[2] / ".tf4" / "bin" / "python"))
    if not python.is_file():
        pytest.skip(f"no transformers 4.4x interpreter at {python}; `make setup` builds .tf4")
    r = subprocess.run([str(python), str(Path(__file__).parents[1] / "tf4_tokenize.py"), str(model_dir)],
                       input=json.dumps(lines), capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_chinese_llama2_keeps_its_sentencepiece_form_with_bos_and_says_where_it_differs(tmp_path, caplog):
    """Chinese-LLaMA-2's vocabulary has no faithful tokenizer.json (runs of spaces split otherwise, whichever
    conversion): the export keeps tokenizer.model, puts BOS first, and names the difference instead of hiding it."""
    src = shared_data("tokenizers", "chinese-llama2")
    out = tmp_path / "export"
    out.mkdir()
    check = write_hf_tokenizer(src, out, lines=sample_lines(300))
    assert not (out / "tokenizer.json").exists() and (out / "tokenizer.model").exists()
    assert check["bos_first"] and 0 < check["equal"] < check["lines"] and "spaces" in check["first_difference"]
    assert "encodes" in caplog.text and "differently from training" in caplog.text
    old = ids_under_transformers_4(out, sample_lines(300))  # 4.4x converts it too: BOS first, spaces differ
    assert all(ids[0] == check["bos_id"] for ids in old["ids"])


def test_eval_refuses_a_model_trained_with_bos_whose_tokenizer_adds_none(hf_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(hf_model, model)
    raw = json.loads((model / "tokenizer.json").read_text())
    raw["post_processor"] = None  # the tiny BPE adds BOS in its post-processor, as Llama-2's does
    (model / "tokenizer.json").write_text(json.dumps(raw))
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": False}))
    r = CliRunner().invoke(app, ["eval", "mmlu", "--model", str(model), "--data", str(shared_mmlu()),
                                 "--out", str(tmp_path / "out"), "--limit", "2"])
    assert r.exit_code == 2, r.output
    assert "its tokenizer adds no BOS, but the model was trained with BOS first" in r.output
    assert "lineage.json" in r.output and not (tmp_path / "out").exists()


def shared_mmlu():
    from medtrain.data_prep.samples import DIR

    return DIR / "mmlu"


LEADING_SPACES = [" A", "  two spaces", " 答案：A", "   three", " \tA tab", " "]


def test_every_llama2_encoder_gives_sentencepieces_ids_on_text_that_begins_with_spaces(llama2_model_only, tmp_path):
    """transformers 5's Llama class drops SentencePiece's dummy prefix before a leading space (' A' -> [319], where
    SentencePiece and transformers 4.46 give [29871, 319]); medtrain's encoders and exports do not, from either
    form of the real Llama-2 tokenizer, under either transformers version."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(llama2_model_only / "tokenizer.model"))
    want = sp.encode(LEADING_SPACES)
    assert want[0] == [29871, 319]
    fast = shared_data("tokenizers", "llama2", "derived_hf_fast")
    encoders = {"tokenizer.model": Encoder(llama2_model_only), "tokenizer.model via HF": Encoder(llama2_model_only,
                backend="hf"), "tokenizer.json": Encoder(fast)}
    assert encoders["tokenizer.json"].backend == "hf"
    for name, enc in encoders.items():
        assert enc.encode_batch(LEADING_SPACES) == want, name
    for name, src in (("from tokenizer.model", llama2_model_only), ("from tokenizer.json", fast)):
        out = tmp_path / name.replace(" ", "_")
        out.mkdir()
        write_hf_tokenizer(src, out)
        with_bos = [[sp.bos_id(), *ids] for ids in want]
        assert AutoTokenizer.from_pretrained(str(out), local_files_only=True)(LEADING_SPACES)["input_ids"] == \
            with_bos, name
        assert ids_under_transformers_4(out, LEADING_SPACES)["ids"] == with_bos, name
