"""Prep end to end on the shipped samples and on ../shared/data: counts, decoding, masking, skips, bytes."""

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from train_fixtures import said
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.core.templates import get_template, render_huatuo
from medtrain.data_prep.format import DatasetError, TokenDataset, TokenizerId
from medtrain.data_prep.mix import mix
from medtrain.data_prep.pipeline import prep
from medtrain.data_prep.reader import PackedSamples, epoch_order, open_samples
from medtrain.data_prep.sources import SOURCES
from medtrain.data_prep.tokenizer import Encoder, train_bpe_tokenizer

SAMPLES = Path(__file__).resolve().parents[2] / "data_prep" / "samples"


@pytest.fixture(scope="session")
def bpe_tok(tiny) -> Path:
    return tiny["tok"]


def _quiet(*args, **kw):
    kw.setdefault("workers", 2)
    return prep(*args, **kw)


def _digest(root: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())
            if p.is_file() and not p.name.startswith(".")}  # the output marker records when and by which process


def test_huatuo_sample_decodes_back_to_rendered_documents(tmp_path, bpe_tok):
    out = tmp_path / "h"
    m = _quiet("huatuo", [SAMPLES / "huatuo_sample.jsonl"], bpe_tok, out, seq_len=64)
    assert m["num_docs"] == 288 and m["stats"]["records"] == 288 and m["stats"]["skipped"] == {}
    data = TokenDataset(out)
    enc = Encoder(bpe_tok)
    docs = [d.text for d in SOURCES["huatuo"].read(SAMPLES / "huatuo_sample.jsonl", None, None)]
    for i in (0, 17, 287):
        ids = data[i]
        assert ids[0] == enc.info.bos_id and ids[-1] == enc.info.eos_id
        assert enc.decode(ids[1:-1]) == docs[i]
    assert m["num_tokens"] == int(data.doc_lengths().sum())
    assert m["stats"]["packed_tokens_dropped"] == m["num_tokens"] % 64
    assert data.manifest["dtype"] == "uint16"


def test_huatuo_formats_nested_variants_and_bad_records_are_counted(tmp_path, bpe_tok):
    good = {"questions": [["头痛怎么办", "头疼怎么办"], ["头痛怎么办"]], "answers": ["多休息"]}
    lines = [json.dumps(good, ensure_ascii=False), "{not json", json.dumps({"questions": [["q"]], "answers": []}),
             json.dumps({"question": "单数键", "answer": "也可以"}, ensure_ascii=False)]
    raw = ("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n"
    jsonl = tmp_path / "h.jsonl"
    jsonl.write_bytes(raw)
    gz = tmp_path / "h.jsonl.gz"
    gz.write_bytes(gzip.compress(raw))
    arr = tmp_path / "h.json"
    arr.write_text(json.dumps([good, {"questions": ["x"], "answers": ["y"]}], ensure_ascii=False, indent=2))
    with said() as logs:
        m = _quiet("huatuo", [jsonl, gz, arr], bpe_tok, tmp_path / "out")
    assert m["stats"]["records"] == 6
    assert m["stats"]["skipped"] == {"malformed_json": 2, "no_answers": 2, "non_utf8": 2}
    per_file = {Path(s["path"]).name: s for s in m["sources"]}
    assert per_file["h.jsonl"]["skipped"] == {"malformed_json": 1, "no_answers": 1, "non_utf8": 1}
    assert per_file["h.json"]["records"] == 2
    assert any(f"{jsonl}:2: malformed_json" in line for line in logs)
    rendered = render_huatuo(["头痛怎么办", "头疼怎么办", "头痛怎么办"], ["多休息"])
    assert rendered == "问：头痛怎么办 / 头疼怎么办\n答：多休息"


def test_sft_prompt_lengths_cover_exactly_the_prompt(tmp_path, bpe_tok):
    out = tmp_path / "cm"
    m = _quiet("cmexam", [SAMPLES / "cmexam_train.csv"], bpe_tok, out, mode="with_reasoning", seq_len=1024)
    assert m["template"] == {"name": "cmexam_with_reasoning", "version": 1}
    data = TokenDataset(out)
    enc = Encoder(bpe_tok)
    import csv

    rows = list(csv.DictReader(open(SAMPLES / "cmexam_train.csv", encoding="utf-8")))
    assert m["num_docs"] == len(rows)
    t = get_template("cmexam_with_reasoning")
    from medtrain.core.benchmarks.record import parse_options

    for i in (0, 5, len(rows) - 1):
        r = rows[i]
        prompt = t.prompt(r["Question"], parse_options(r["Options"]))
        p = int(data.prompt_lens[i])
        ids = data[i]
        assert list(ids[:p]) == [enc.info.bos_id] + enc.encode_batch([prompt])[0]
        assert enc.decode(ids[1:p]) == prompt
        assert enc.decode(ids[p:-1]) == t.response(r["Answer"], r["Explanation"])
        assert enc.decode(ids[p:-1]).startswith("答案: " + r["Answer"])
    sample = open_samples(out, "sft", 1024)[0]
    assert sample.prompt_len == int(data.prompt_lens[0])


def test_answer_only_mode_and_truncation_counts(tmp_path, bpe_tok):
    m = _quiet("cmexam", [SAMPLES / "cmexam_train.csv"], bpe_tok, tmp_path / "a", mode="answer_only", seq_len=64)
    assert m["template"]["name"] == "cmexam_answer_only"
    assert m["stats"]["prompt_too_long"] + m["stats"]["response_truncated"] > 0


def test_csv_missing_column_exits_2_and_writes_nothing(tmp_path, bpe_tok):
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Choices,Answer\nq,A x,A\n")
    r = CliRunner().invoke(app, ["prep", "cmexam", "--input", str(bad), "--tokenizer", str(bpe_tok), "--out",
                                 str(tmp_path / "o"), "--workers", "1"])
    assert r.exit_code == 2
    assert "bad.csv:1: missing column(s) Options" in r.output
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp*"))


def test_bad_mcq_rows_are_skipped_per_reason(tmp_path, bpe_tok):
    rows = ('Question,Options,Answer,Explanation\n'
            'q1,"A 甲\nB 乙",A,e\n'
            'q2,"A 甲\nB 乙",C,e\n'        # answer not among options
            'q3,"A 甲\n乙没有字母",A,e\n'    # option line without a letter
            'q4,"A 甲\nB 乙",,e\n')          # no answer
    f = tmp_path / "c.csv"
    f.write_bytes(rows.encode() + 'q5,"A \xff\nB x",A,e\n'.encode("latin-1"))
    m = _quiet("cmexam", [f], bpe_tok, tmp_path / "o", mode="answer_only")
    assert m["num_docs"] == 1
    assert m["stats"]["skipped"] == {"answer_not_in_options": 1, "no_answer": 1, "non_utf8": 1,
                                     "option_without_letter": 1}


def test_empty_result_is_an_error_and_nothing_is_written(tmp_path, bpe_tok):
    f = tmp_path / "h.jsonl"
    f.write_text('{"questions": ["q"], "answers": []}\n')
    with pytest.raises(DatasetError, match="nothing usable .*no_answers=1"):
        _quiet("huatuo", [f], bpe_tok, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_second_run_is_byte_identical_and_existing_output_needs_overwrite(tmp_path, bpe_tok):
    a, b = tmp_path / "a", tmp_path / "b"
    _quiet("cmexam", [SAMPLES / "cmexam_train.csv"], bpe_tok, a, mode="with_reasoning", workers=2, chunk_size=7)
    _quiet("cmexam", [SAMPLES / "cmexam_train.csv"], bpe_tok, b, mode="with_reasoning", workers=1)
    assert _digest(a) == _digest(b)
    with pytest.raises(DatasetError, match="already exists; pass --overwrite"):
        _quiet("cmexam", [SAMPLES / "cmexam_train.csv"], bpe_tok, a, mode="with_reasoning")


def test_reader_refuses_another_tokenizer_and_inconsistent_files(tmp_path, bpe_tok):
    out = tmp_path / "h"
    _quiet("huatuo", [SAMPLES / "huatuo_sample.jsonl"], bpe_tok, out)
    with pytest.raises(DatasetError, match="prepared with tokenizer .* not the run's"):
        TokenDataset(out, expect_tokenizer=TokenizerId("0" * 64, "0" * 64))
    with pytest.raises(DatasetError, match="stage is sft"):
        open_samples(out, "sft", 128)
    np.save(out / "offsets.npy", np.load(out / "offsets.npy")[:-1])
    with pytest.raises(DatasetError, match="offsets.npy disagrees with manifest"):
        TokenDataset(out)
    with pytest.raises(DatasetError, match="no manifest.json"):
        TokenDataset(tmp_path)


def test_packed_blocks_are_the_global_stream_and_order_is_seeded(tmp_path, bpe_tok):
    out = tmp_path / "h"
    m = _quiet("huatuo", [SAMPLES / "huatuo_sample.jsonl"], bpe_tok, out, seq_len=32)
    samples = open_samples(out, "continual", 32, "packed")
    assert isinstance(samples, PackedSamples) and len(samples) == m["num_tokens"] // 32
    stream = np.load(out / "tokens.npy")
    assert np.array_equal(samples[3].input_ids, stream[96:128])
    docs = open_samples(out, "continual", 32, "per_document")
    assert len(docs) == 288 and all(len(docs[i].input_ids) <= 32 for i in range(288))
    assert np.array_equal(epoch_order(100, 7, 0), epoch_order(100, 7, 0))
    assert not np.array_equal(epoch_order(100, 7, 0), epoch_order(100, 7, 1))


def test_mix_takes_each_input_weight_times(tmp_path, bpe_tok):
    a, b = tmp_path / "a", tmp_path / "b"
    _quiet("cmexam", [SAMPLES / "cmexam_train.csv"], bpe_tok, a, mode="answer_only")
    _quiet("cmexam", [SAMPLES / "cmexam_test.csv"], bpe_tok, b, mode="answer_only")
    r = CliRunner().invoke(app, ["prep", "mix", "--input", f"{a}:1", "--input", f"{b}:0.5", "--out",
                                 str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    mixed = TokenDataset(tmp_path / "m")
    assert len(mixed) == len(TokenDataset(a)) + round(0.5 * len(TokenDataset(b)))
    assert np.array_equal(mixed[0], TokenDataset(a)[0]) and mixed.prompt_lens[0] == TokenDataset(a).prompt_lens[0]
    c = tmp_path / "c"
    _quiet("cmexam", [SAMPLES / "cmexam_test.csv"], bpe_tok, c, mode="with_reasoning")
    with pytest.raises(DatasetError, match="template"):
        mix([(a, 1.0), (c, 1.0)], tmp_path / "bad")


def test_inspect_shows_manifest_histogram_and_decoded_sample(tmp_path, bpe_tok):
    out = tmp_path / "cm"
    _quiet("cmexam", [SAMPLES / "cmexam_test.csv"], bpe_tok, out, mode="with_reasoning")
    r = CliRunner().invoke(app, ["prep", "inspect", str(out), "--sample", "1"])
    assert r.exit_code == 0, r.output
    assert "histogram" in r.output and "--- response (trained) ---" in r.output and "答案: " in r.output
    bad = CliRunner().invoke(app, ["prep", "inspect", str(out), "--sample", "9999"])
    assert bad.exit_code == 2 and "out of range" in bad.output


def test_medqa_reader(tmp_path, bpe_tok):
    f = tmp_path / "medqa.jsonl"
    recs = [{"question": "A 45-year-old man...", "options": {"A": "x", "B": "y", "C": "z", "D": "w"},
             "answer_idx": "C", "answer": "z"},
            {"question": "bad", "options": {"A": "x"}, "answer_idx": "E"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = _quiet("medqa", [f], bpe_tok, tmp_path / "o", mode="answer_only")
    assert m["num_docs"] == 1 and m["stats"]["skipped"] == {"answer_not_in_options": 1}


# Real files in ../shared/data -------------------------------------------------------------------------------


def test_real_cmexam_val_with_llama2_sentencepiece(tmp_path):
    val = shared_data("cmexam", "val.csv")
    tok = shared_data("tokenizers", "llama2")
    m = _quiet("cmexam", [val], tok, tmp_path / "v", mode="with_reasoning", seq_len=4096)
    assert m["stats"]["records"] == 6810 and m["stats"]["skipped"] == {"no_answer": 1}
    assert m["stats"]["without_explanation"] > 1000
    assert m["tokenizer"]["vocab_size"] == 32000 and m["tokenizer"]["bos_id"] == 1 and m["tokenizer"]["eos_id"] == 2
    data = TokenDataset(tmp_path / "v")
    enc = Encoder(tok)
    assert enc.backend == "sentencepiece"
    first = data[0]
    assert enc.decode(first[data.prompt_lens[0]:]).startswith("答案: C")


def test_sentencepiece_and_hf_fast_llama2_give_the_same_dataset(tmp_path):
    tok = shared_data("tokenizers", "llama2")
    corpus = shared_data("corpora", "medicalgpt", "fever.txt")
    a = _quiet("text", [corpus], tok, tmp_path / "sp")
    b = _quiet("text", [corpus], tok / "derived_hf_fast", tmp_path / "hf")
    assert a["num_tokens"] == b["num_tokens"]
    assert np.array_equal(np.load(tmp_path / "sp" / "tokens.npy"), np.load(tmp_path / "hf" / "tokens.npy"))


def test_real_cnmleqa_through_the_medmcqa_reader(tmp_path, bpe_tok):
    f = shared_data("corpora", "cnmleqa", "CNMLEQA-3k.json")
    m = _quiet("medmcqa", [f], bpe_tok, tmp_path / "c", mode="answer_only", seq_len=4096)
    assert m["stats"]["records"] + sum(m["stats"]["skipped"].values()) == 2949
    assert m["stats"]["records"] > 2900


def test_byte_ranges_keep_line_numbers_and_bytes_whatever_the_cut(tmp_path, bpe_tok):
    """Workers read their own byte ranges of a JSON Lines file; skips still name the right file:line and the
    dataset is the same bytes however the file is cut."""
    lines = []
    for i in range(1, 201):
        if i % 37 == 0:
            lines.append("{broken")
        elif i % 53 == 0:
            lines.append("")
        else:
            lines.append(json.dumps({"questions": [f"问题{i}"], "answers": [f"回答{i}" * (i % 5 + 1)]},
                                    ensure_ascii=False))
    f = tmp_path / "h.jsonl"
    f.write_text("\r\n".join(lines))  # CRLF and no newline at the end
    with said() as logs_small:
        _quiet("huatuo", [f], bpe_tok, tmp_path / "small", chunk_bytes=100)
    m = _quiet("huatuo", [f], bpe_tok, tmp_path / "big")
    assert _digest(tmp_path / "small") == _digest(tmp_path / "big")
    assert m["stats"]["skipped"] == {"malformed_json": 5} and m["num_docs"] == 200 - 5 - 3
    assert [line.strip().split(" (")[0] for line in logs_small[1:]] == [f"{f}:{n}: malformed_json"
                                                                        for n in (37, 74, 111, 148, 185)]


def test_records_read_counts_the_skipped_rows_too(tmp_path, bpe_tok):
    rows = ('Question,Options,Answer,Explanation\n'
            'q1,"A 甲\nB 乙",A,e\n'
            'q2,"A 甲\nB 乙",B,e\n'
            'q3,"A 甲\nB 乙",Z,e\n')
    f = tmp_path / "three.csv"
    f.write_text(rows, encoding="utf-8")
    r = CliRunner().invoke(app, ["prep", "cmexam", "--input", str(f), "--tokenizer", str(bpe_tok), "--out",
                                 str(tmp_path / "o"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "3 records read: 2 used, 1 skipped" in r.output


def test_another_copy_of_the_same_tokenizer_is_accepted_another_tokenizer_refused_before_launch(tmp_path, bpe_tok):
    import json
    import shutil

    from medtrain.data_prep.tokenizer import tokenizer_identity

    out = tmp_path / "h"
    _quiet("huatuo", [SAMPLES / "huatuo_sample.jsonl"], bpe_tok, out, seq_len=64)
    copy = tmp_path / "copy"
    shutil.copytree(bpe_tok, copy)
    cfg = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**cfg, "model_max_length": 123}))
    assert tokenizer_identity(copy).sha256 != tokenizer_identity(bpe_tok).sha256  # other files...
    TokenDataset(out, expect_tokenizer=tokenizer_identity(copy))  # ...same ids: accepted
    other = train_bpe_tokenizer(["完全不同的文本"] * 50 + ["other words entirely"] * 50, tmp_path / "other",
                                vocab_size=300)
    with pytest.raises(DatasetError, match="split text into different ids"):
        TokenDataset(out, expect_tokenizer=tokenizer_identity(other))
    r = CliRunner().invoke(app, ["launch", "--hosts", "hostfiles/localhost", "--launcher", "local", "--recipe",
                                 "recipes/tiny/continual.yaml", "--set", f"data={out}", "--set", f"tokenizer={other}",
                                 "--set", f"output_dir={tmp_path / 'run'}"])
    assert r.exit_code == 2 and "split text into different ids" in r.output  # before any rank starts
    assert not (tmp_path / "run").exists()


def test_prep_medmcqa_records_the_answer_index_it_used_and_refuses_an_ambiguous_file(tmp_path, bpe_tok):
    rec = {"question": "Which vitamin prevents scurvy?", "opa": "A vit", "opb": "D vit", "opc": "C vit",
           "opd": "K vit", "exp": "Collagen needs it.", "choice_type": "single", "id": "x", "subject_name": "Bio"}
    hf = tmp_path / "hf.jsonl"
    hf.write_text("".join(json.dumps({**rec, "cop": c}) + "\n" for c in (0, 2, 3)))
    r = CliRunner().invoke(app, ["prep", "medmcqa", "--input", str(hf), "--tokenizer", str(bpe_tok), "--out",
                                 str(tmp_path / "hf_out"), "--mode", "answer_only", "--workers", "1"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "hf_out" / "manifest.json").read_text())
    assert manifest["answer_index"]["base"] == 0 and "Hugging Face" in manifest["answer_index"]["how"]
    ambiguous = tmp_path / "dev.json"
    ambiguous.write_text("".join(json.dumps({**rec, "cop": c}) + "\n" for c in (1, 2, 3)))
    r = CliRunner().invoke(app, ["prep", "medmcqa", "--input", str(ambiguous), "--tokenizer", str(bpe_tok),
                                 "--out", str(tmp_path / "amb"), "--workers", "1"])
    assert r.exit_code == 2 and "--answer-index 1" in r.output and not (tmp_path / "amb").exists()
    r = CliRunner().invoke(app, ["prep", "medmcqa", "--input", str(ambiguous), "--tokenizer", str(bpe_tok),
                                 "--out", str(tmp_path / "amb"), "--workers", "1", "--answer-index", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "amb" / "manifest.json").read_text())["answer_index"]["how"] == \
        "given by --answer-index"


def test_the_hugging_face_medmcqa_parquet_gives_every_record_its_letter(tmp_path, bpe_tok):
    """openlifescienceai/medmcqa as the hub stores it: parquet, cop a ClassLabel 0-3 (an int), id/subject/topic
    columns beside; read through `datasets`, the index detected as 0-based."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cops = [2, 0, 3, 1]
    rows = {"id": [f"r{i}" for i in range(4)], "question": [f"Question {i} about vitamins?" for i in range(4)],
            "opa": ["A vit"] * 4, "opb": ["B vit"] * 4, "opc": ["C vit"] * 4, "opd": ["D vit"] * 4, "cop": cops,
            "choice_type": ["single"] * 4, "exp": ["Because."] * 4, "subject_name": ["Biochemistry"] * 4,
            "topic_name": [None] * 4}
    folder = tmp_path / "medmcqa" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows), folder / "train-00000-of-00001.parquet")
    r = CliRunner().invoke(app, ["prep", "medmcqa", "--input", str(tmp_path / "medmcqa"), "--tokenizer",
                                 str(bpe_tok), "--out", str(tmp_path / "o"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    data, enc = TokenDataset(tmp_path / "o"), Encoder(bpe_tok)
    answers = [enc.decode(data[i][data.prompt_lens[i]:]).split("\n")[0] for i in range(len(data))]
    assert answers == [f"答案: {'ABCD'[c]}" for c in cops]
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["answer_index"]["base"] == 0


def test_real_cnmleqa_gives_every_record_its_letter(tmp_path, bpe_tok):
    """CNMLEQA's release as it is: a JSON array, opa..ope, answer "opX"; each example answers with its letter."""
    f = shared_data("corpora", "cnmleqa", "CNMLEQA-3k.json")
    m = _quiet("cnmleqa", [f], bpe_tok, tmp_path / "c", seq_len=4096, mode=SOURCES["cnmleqa"].default_mode)
    records = json.loads(f.read_text())
    data, enc = TokenDataset(tmp_path / "c"), Encoder(bpe_tok)
    answers = [enc.decode(data[i][data.prompt_lens[i]:-1]) for i in range(len(data))]  # without EOS
    assert m["stats"]["records"] == len(data) == len(records) - sum(m["stats"]["skipped"].values()) > 2900
    assert m["template"]["name"] == "cmexam_with_reasoning"  # the default mode, as for CMExam: they mix
    kept = [r for r in records if all(str(r[k]).strip() for k in ("question", "opa", "opb", "opc", "opd", "ope"))]
    assert answers == [f"答案: {'ABCDE'['abcde'.index(r['answer'][-1])]}" for r in kept]


@pytest.mark.parametrize("form", ["jsonl", "json array, options as a mapping", "parquet", "save_to_disk"])
def test_cmexam_copies_outside_csv_prepare_to_the_same_tokens(form, tmp_path, bpe_tok):
    """CMExam's hub copies keep the CSV's columns in JSON, parquet or Arrow; each must train exactly what the
    release's CSV trains (the first 300 real validation rows, every letter and explanation)."""
    import csv

    val = shared_data("cmexam", "val.csv")
    with open(val, encoding="utf-8") as f:
        rows = [r for _, r in zip(range(300), csv.DictReader(f), strict=False)]
    csv_copy = tmp_path / "val.csv"
    with open(csv_copy, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    want = _quiet("cmexam", [csv_copy], bpe_tok, tmp_path / "from_csv", seq_len=4096, mode="with_reasoning")
    if form == "jsonl":
        copy = tmp_path / "valid.jsonl"
        copy.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif form.startswith("json array"):
        copy = tmp_path / "valid.json"
        mapped = [{**r, "Options": {ln.strip()[0]: ln.strip()[1:].strip() for ln in r["Options"].splitlines()
                                    if ln.strip()}} for r in rows]
        copy.write_text(json.dumps(mapped, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        import datasets

        ds = datasets.Dataset.from_list(rows)
        if form == "parquet":
            (tmp_path / "hub" / "data").mkdir(parents=True)
            ds.to_parquet(str(tmp_path / "hub" / "data" / "validation-00000-of-00001.parquet"))
        else:
            datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hub"))
        copy = tmp_path / "hub"
    r = CliRunner().invoke(app, ["prep", "cmexam", "--input", str(copy), "--split", "validation", "--tokenizer",
                                 str(bpe_tok), "--out", str(tmp_path / "o"), "--seq-len", "4096", "--workers", "1"])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert got["stats"]["records"] == want["stats"]["records"] > 250
    assert got["stats"]["skipped"] == want["stats"]["skipped"]
    for name in ("tokens.npy", "offsets.npy", "prompt_lens.npy"):
        assert np.array_equal(np.load(tmp_path / "o" / name), np.load(tmp_path / "from_csv" / name)), name


def test_a_cmexam_spreadsheet_is_refused_with_the_conversion(tmp_path, bpe_tok):
    xlsx = tmp_path / "val.xlsx"
    xlsx.write_bytes(b"PK\x03\x04 not really a workbook")
    r = CliRunner().invoke(app, ["prep", "cmexam", "--input", str(xlsx), "--tokenizer", str(bpe_tok),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "save it as CSV first" in r.output and "read_excel" in r.output
    assert not (tmp_path / "o").exists()


def test_val_fraction_holds_documents_out_by_their_ids_whatever_the_chunking(tmp_path, bpe_tok):
    """Each document goes to one side as prep writes it: the held-out set is exactly the documents whose id hash
    falls below the fraction (the rule the whole set would give), in order, the same for any workers or chunks."""
    from medtrain.data_prep.split import document_keys

    src = [SAMPLES / "huatuo_sample.jsonl"]
    whole = TokenDataset(_quiet("huatuo", src, bpe_tok, tmp_path / "whole", seq_len=64) and tmp_path / "whole")
    docs = [np.asarray(whole[i]) for i in range(len(whole))]
    keys = document_keys(np.concatenate(docs), np.array([len(d) for d in docs]), docs[0].dtype)
    want_val = keys < np.uint64(0.1 * float(2**64 - 1))
    m = _quiet("huatuo", src, bpe_tok, tmp_path / "a", seq_len=64, val_fraction=0.1, chunk_bytes=2000)
    _quiet("huatuo", src, bpe_tok, tmp_path / "b", seq_len=64, val_fraction=0.1, workers=1)
    for side in ("", "val"):  # the manifests name their own folders
        a, b = (_digest(tmp_path / run / side) for run in "ab")
        assert a.pop("manifest.json") and b.pop("manifest.json") and a == b
    train, val = TokenDataset(tmp_path / "a"), TokenDataset(tmp_path / "a" / "val")
    assert [list(val[i]) for i in range(len(val))] == [list(d) for d, v in zip(docs, want_val, strict=True) if v]
    assert [list(train[i]) for i in range(len(train))] == [list(d) for d, v in zip(docs, want_val, strict=True)
                                                          if not v]
    assert 10 < len(val) < 50 and m["num_docs"] == len(train) == len(whole) - len(val)
    assert m["split"] == {"fraction": 0.1, "method": "blake2b of each document's token ids < fraction",
                          "train_docs": len(train), "val_docs": len(val), "side": "train",
                          "val_data": str(tmp_path / "a" / "val")}
    assert val.manifest["split"]["side"] == "validation" and val.manifest["stats"] == m["stats"]


def test_a_val_fraction_too_small_for_the_data_is_refused_with_nothing_left(tmp_path, bpe_tok):
    with pytest.raises(DatasetError, match="cannot be split 0.000% held out"):
        _quiet("huatuo", [SAMPLES / "huatuo_sample.jsonl"], bpe_tok, tmp_path / "o", val_fraction=1e-9)
    assert not any(tmp_path.iterdir())
    with pytest.raises(DatasetError, match="must be above 0 and below 0.5"):
        _quiet("huatuo", [SAMPLES / "huatuo_sample.jsonl"], bpe_tok, tmp_path / "o", val_fraction=0.7)
