"""Tokenizers for offline prep: SentencePiece itself when a Llama `tokenizer.model` is present (about 8x the
Rust tokenizer on Chinese text, docs/design.md), else the Hugging Face tokenizer of the directory.

When both load, SentencePiece is used only if its ids agree with the Hugging Face tokenizer on a sample.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medtrain.core.publish import staged_dir
from medtrain.core.templates import ALPACA_HEADER, MCQ_INSTRUCTION
from medtrain.data_prep.format import DatasetError, TokenizerId

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt")


@dataclass
class TokenizerInfo:
    path: str
    sha256: str
    fingerprint: str
    """What the tokenizer does (tokenizer_fingerprint): equal for every copy and form of the same tokenizer."""
    vocab_size: int
    bos_id: int | None
    eos_id: int
    pad_id: int | None
    backend: str

    def to_manifest(self) -> dict:
        return asdict(self)


def tokenizer_sha256(path: str | Path) -> str:
    """One hash over the tokenizer's files (names and bytes): what "the same tokenizer" means for a dataset."""
    root = Path(path)
    h = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        f = root / name
        if f.is_file():
            found = True
            h.update(name.encode() + b"\0" + f.read_bytes())
    if not found:
        raise DatasetError(f"{root}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}); pass a tokenizer "
                           "directory with --tokenizer")
    return h.hexdigest()


# What a tokenizer is judged by: text that exercises what differs between tokenizers of one family (Chinese, the
# paper's data; English; digits; runs of spaces, tabs and newlines inside a line; punctuation of both scripts;
# characters outside the vocabulary, which byte fallback spells as bytes; text that begins with spaces, where
# transformers 5's Llama classes drop SentencePiece's dummy prefix: ' A' is [29871, 319] in SentencePiece and
# [319] there). A literal "<s>" is left out on purpose: SentencePiece spells it as text, Hugging Face as BOS, and
# prep never relies on either (BOS and EOS are placed by id).
PROBE = [
    "患者，男，45岁。主诉：反复咳嗽、咳痰3年，加重1周。",
    "What is the first-line treatment for type 2 diabetes mellitus? Metformin 500 mg twice daily.",
    "剂量：0.25 g, 1234567890, 3.14159; pH 7.35–7.45.",
    "two  spaces, three   spaces,\ttab\tand\nnew\n\nlines",
    "Ünïcödé àccents ß ﬁ 𝔘 😀 ℃ ±",
    "答案: C\n解析: 慢性阻塞性肺疾病（COPD）的诊断需要肺功能检查。",
    " A",
    "  two spaces first",
    " 答案：A",
]

# SentencePiece's own space handling (add_dummy_prefix, spaces as "▁"), as Llama-2's released tokenizer.json
# spells it; transformers 5's LlamaTokenizer replaces it with a Metaspace pre-tokenizer that skips the prefix
# before a leading space
SP_NORMALIZER = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                     {"type": "Replace", "pattern": {"String": " "},
                                                      "content": "\u2581"}]}


def is_sentencepiece_bpe(raw: dict) -> bool:
    """A tokenizer.json that is a SentencePiece BPE (Llama's): byte fallback and "▁" for spaces, through a
    Prepend normaliser or a non-splitting Metaspace pre-tokeniser."""
    model = raw.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        return False

    def parts(node: dict | None, key: str) -> list[dict]:
        node = node or {}
        return [node, *node.get(key, [])]

    prepend = any(n.get("type") == "Prepend" for n in parts(raw.get("normalizer"), "normalizers"))
    metaspace = any(n.get("type") == "Metaspace" and not n.get("split", True)
                    for n in parts(raw.get("pre_tokenizer"), "pretokenizers"))
    return prepend or metaspace


def sentencepiece_spaces(raw: dict) -> dict:
    """The tokenizer.json with SentencePiece's space handling (it gives SentencePiece's ids, leading spaces
    included, under transformers 4.4x and 5.x alike when loaded as it is)."""
    return {**raw, "normalizer": SP_NORMALIZER, "pre_tokenizer": None}


def tokenizer_fingerprint(path: str | Path, sp=None, hf=None) -> str:
    """Two tokenizers are the same when they do the same: the same piece for every id, the same ids for PROBE
    and the same BOS/EOS/UNK ids. So Llama-2's `tokenizer.model` and its `tokenizer.json` are one tokenizer,
    whatever the config files or paths, and another vocabulary is not. `sp`/`hf`: this directory's tokenizer
    already loaded (an Encoder passes its own), so nothing is loaded twice."""
    root = Path(path)
    if (root / "tokenizer.model").is_file():
        if sp is None:
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model"))
        vocab = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        probe = sp.encode(PROBE)
        special = [sp.bos_id(), sp.eos_id(), sp.unk_id()]
    elif any((root / n).is_file() for n in ("tokenizer.json", "vocab.json")):
        tok = hf if hf is not None else _load_hf(root)
        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        probe = tok(PROBE, add_special_tokens=False)["input_ids"]
        special = [tok.bos_token_id, tok.eos_token_id, tok.unk_token_id]
    else:
        raise DatasetError(f"{root}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}); pass a tokenizer "
                           "directory with --tokenizer")
    special = [i if i is not None and i >= 0 else None for i in special]
    blob = json.dumps({"vocab": vocab, "probe": probe, "special": special}, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def tokenizer_identity(path: str | Path) -> TokenizerId:
    return TokenizerId(tokenizer_sha256(path), tokenizer_fingerprint(path))


class Encoder:
    """encode_batch(texts) -> ids without special tokens; BOS/EOS are added by the pipeline."""

    def __init__(self, path: str | Path, backend: str = "auto"):
        self.path = Path(path)
        self.sha256 = tokenizer_sha256(self.path)
        self.sp = self.hf = None
        has_sp = (self.path / "tokenizer.model").is_file()
        has_hf = any((self.path / n).is_file() for n in ("tokenizer.json", "vocab.json"))
        if backend in ("auto", "sentencepiece") and has_sp:
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor(model_file=str(self.path / "tokenizer.model"))
        if backend == "hf" or (backend == "auto" and has_hf) or (self.sp is None and backend != "sentencepiece"):
            self.hf = _load_hf(self.path)
        if self.sp is None and self.hf is None:
            raise DatasetError(f"{self.path}: cannot load a tokenizer with backend {backend}")
        self.fingerprint = tokenizer_fingerprint(self.path, sp=self.sp, hf=self.hf)
        self.backend = "sentencepiece" if self.sp is not None else "hf"
        self.info = self._info()

    def _info(self) -> TokenizerInfo:
        special = _special_tokens(self.path)
        if self.sp is not None:
            vocab = self.sp.get_piece_size()
            bos, eos = self.sp.bos_id(), self.sp.eos_id()
            pad = self.sp.pad_id()
            if pad < 0 and special.get("pad_token"):
                pid = self.sp.piece_to_id(special["pad_token"])
                pad = pid if pid != self.sp.unk_id() else -1
            if self.hf is not None:
                vocab = max(vocab, len(self.hf))
            return TokenizerInfo(str(self.path), self.sha256, self.fingerprint, vocab, bos if bos >= 0 else None, eos,
                                 pad if pad >= 0 else None, self.backend)
        tok = self.hf
        if tok.eos_token_id is None:
            raise DatasetError(f"{self.path}: the tokenizer has no EOS token; documents need one to end")
        return TokenizerInfo(str(self.path), self.sha256, self.fingerprint, len(tok), tok.bos_token_id,
                             tok.eos_token_id, tok.pad_token_id, self.backend)

    def agree_or_fall_back(self, sample: list[str]) -> bool:
        """Keep SentencePiece only if it gives the Hugging Face ids on `sample`; returns whether it was kept."""
        if self.sp is None or self.hf is None:
            return self.sp is not None
        if self.sp.encode(sample) == self.hf(sample, add_special_tokens=False)["input_ids"]:
            return True
        self.sp, self.backend = None, "hf"
        self.info = self._info()
        return False

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.sp is not None:
            return self.sp.encode(texts)
        backend = getattr(self.hf, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            # the Rust tokenizer without offsets or attention masks: same ids as __call__, ~2x faster
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return self.hf(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.sp is not None:
            return self.sp.decode(ids)
        return self.hf.decode(ids, skip_special_tokens=False)


def _special_tokens(path: Path) -> dict:
    f = path / "special_tokens_map.json"
    if not f.is_file():
        return {}
    raw = json.loads(f.read_text())
    return {k: (v["content"] if isinstance(v, dict) else v) for k, v in raw.items()}


def _load_hf(path: Path, as_sentencepiece: bool = True):
    """The directory's Hugging Face tokenizer; a SentencePiece BPE (Llama's) with SentencePiece's own space
    handling restored (`as_sentencepiece`), so medtrain's encoders give SentencePiece's ids whatever the
    transformers version. `as_sentencepiece=False`: exactly what AutoTokenizer gives (what eval sees)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types for a bad directory
        raise DatasetError(f"{path}: not a loadable tokenizer directory ({type(e).__name__}: {e})") from None
    backend = getattr(tok, "backend_tokenizer", None)
    raw = json.loads(backend.to_str()) if as_sentencepiece and backend is not None else {}
    if is_sentencepiece_bpe(raw):
        from tokenizers import Tokenizer

        fixed = Tokenizer.from_str(json.dumps(sentencepiece_spaces(raw)))
        backend.normalizer, backend.pre_tokenizer = fixed.normalizer, fixed.pre_tokenizer
    return tok


def write_hf_tokenizer(src: Path, dst: Path, lines: list[str] = ()) -> dict:
    """Put into `dst` (a model directory being staged) a tokenizer that AutoTokenizer loads to encode as training
    did, BOS first: the files of `src`, plus, when `src` holds only a SentencePiece `tokenizer.model` (as a Llama-2
    checkpoint may), a `tokenizer.json` made from it, and `tokenizer_config.json` and `special_tokens_map.json`
    that name the special tokens and `add_bos_token`. Without them transformers 5 builds a tokenizer that adds no
    BOS and merges runs of spaces differently.

    Checked on PROBE and `lines` against the training tokenizer: a tokenizer that adds no BOS where training had
    one is a DatasetError; other differences (Chinese-LLaMA-2's vocabulary has no faithful Hugging Face form: runs
    of spaces split otherwise) are a warning. Returns the check, for the model's lineage."""
    src, dst = Path(src), Path(dst)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    encoder = Encoder(src)
    lines = [*PROBE, *lines]
    check: dict = {}
    if not (dst / "tokenizer.json").is_file() and (dst / "tokenizer.model").is_file():
        converted = _llama_tokenizer_from_sentencepiece(dst / "tokenizer.model", bos=encoder.info.bos_id is not None)
        if converted is not None:
            converted.save_pretrained(str(dst))
            _write_special_configs(dst, encoder)
            check = _compare_with_training(dst, encoder, lines)
            if check["equal"] == check["lines"]:
                return check
            (dst / "tokenizer.json").unlink()  # keep SentencePiece's own form; the loader converts it
    _write_special_configs(dst, encoder)
    check = _compare_with_training(dst, encoder, lines)
    if check["equal"] < check["lines"]:
        logging.getLogger(__name__).warning(
            "%s: the Hugging Face form of this tokenizer encodes %d of %d check lines differently from training "
            "(first: %s); eval through transformers sees slightly different ids there", src,
            check["lines"] - check["equal"], check["lines"], check["first_difference"])
    return check


def _compare_with_training(model_dir: Path, encoder: Encoder, lines: list[str]) -> dict:
    got = _load_hf(model_dir, as_sentencepiece=False)  # as eval's AutoTokenizer will load the export
    bos = encoder.info.bos_id
    have = got(lines)["input_ids"]
    want = [([bos] if bos is not None else []) + ids for ids in encoder.encode_batch(lines)]
    if bos is not None and any(ids[:1] != [bos] for ids in have):
        raise DatasetError(f"{encoder.path}: the exported tokenizer does not put BOS ({bos}) first, as training "
                           "did; export with the tokenizer directory the model was trained with")
    same = [a == b for a, b in zip(have, want, strict=True)]
    first = next((i for i, ok in enumerate(same) if not ok), None)
    return {"lines": len(lines), "equal": sum(same), "bos_id": bos, "bos_first": bos is not None,
            "first_difference": None if first is None else f"{lines[first][:40]!r}: {have[first][:10]} vs "
                                                              f"training {want[first][:10]}"}


def _write_special_configs(dst: Path, encoder: Encoder) -> None:
    """tokenizer_config.json with the special tokens and add_bos_token as training used them, and
    special_tokens_map.json, which transformers 4.4x reads and 5.x no longer writes: the export loads under
    both."""
    info = encoder.info
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    pieces = _pieces(encoder)
    special = {k: pieces[i] for k, i in (("bos_token", info.bos_id), ("eos_token", info.eos_id),
                                         ("pad_token", info.pad_id)) if i is not None}
    unk = cfg.get("unk_token") or (pieces[encoder.sp.unk_id()] if encoder.sp is not None else None)
    if unk:
        special["unk_token"] = unk
    cfg.update({**special, "add_bos_token": info.bos_id is not None, "add_eos_token": False})
    if not (dst / "tokenizer.model").is_file():
        # transformers 4.4x's LlamaTokenizerFast rebuilds itself from tokenizer.model whenever add_prefix_space is
        # set, and fails without one; tokenizer.json's normalizer already carries the prefix space
        cfg.pop("add_prefix_space", None)
    if cfg.get("tokenizer_class") == "TokenizersBackend":  # transformers 5's name; 4.4x knows the same class as
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # PreTrainedTokenizerFast, an alias of it in 5.x
    tok_json = dst / "tokenizer.json"
    raw = json.loads(tok_json.read_text(encoding="utf-8")) if tok_json.is_file() else {}
    if is_sentencepiece_bpe(raw):
        # SentencePiece's space handling in the file, and a class that loads the file as it is: transformers 5's
        # LlamaTokenizer would rebuild the pre-tokeniser and lose the prefix before a leading space
        tok_json.write_text(json.dumps(sentencepiece_spaces(raw), ensure_ascii=False), encoding="utf-8")
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg.pop("add_prefix_space", None)
        cfg.pop("legacy", None)
    elif not raw and (dst / "tokenizer.model").is_file() and cfg.get("tokenizer_class") == "PreTrainedTokenizerFast":
        cfg["tokenizer_class"] = "LlamaTokenizer"  # SentencePiece's form alone: the Llama class converts it
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (dst / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n")


def _pieces(encoder: Encoder) -> dict[int, str]:
    ids = [i for i in (encoder.info.bos_id, encoder.info.eos_id, encoder.info.pad_id) if i is not None]
    if encoder.sp is not None:
        ids.append(encoder.sp.unk_id())
        return {i: encoder.sp.id_to_piece(i) for i in ids}
    return {i: encoder.hf.convert_ids_to_tokens(i) for i in ids}


def _llama_tokenizer_from_sentencepiece(model_file: Path, bos: bool):  # -> LlamaTokenizer | None
    """A Llama tokenizer (the tokenizers backend) with SentencePiece's own ids. Its merges are ordered by piece
    score, as SentencePiece applies them; transformers 5's own conversion orders them by id, which splits runs of
    spaces differently ("▁▁" where SentencePiece gives "▁" "▁spaces")."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
    from transformers import LlamaTokenizer

    proto = model_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    if proto.trainer_spec.model_type != model_pb2.TrainerSpec.BPE:
        return None  # a unigram model has no merges to order; the loader's own conversion is checked instead
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    ranked = []
    for piece, i in vocab.items():
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        ranked += [(-sp.get_score(i), vocab[a], vocab[b], (a, b)) for a, b in splits]
    merges = [m for *_, m in sorted(ranked)]
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=bos, add_eos_token=False,
                          bos_token=sp.id_to_piece(sp.bos_id()), eos_token=sp.id_to_piece(sp.eos_id()),
                          unk_token=sp.id_to_piece(sp.unk_id()))


def tokenizer_corpus(inputs: list[Path]) -> list[str]:
    """`medtrain tokenizer`'s training lines: every non-blank line of the inputs, and the SFT template's header
    50 times so it compresses to a few tokens."""

    texts = [line for p in inputs for line in Path(p).read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts + [ALPACA_HEADER + MCQ_INSTRUCTION] * 50


def train_bpe_tokenizer(texts: list[str], out: Path, vocab_size: int = 2000) -> Path:
    """A small byte-level BPE tokenizer trained locally (nothing can be downloaded), saved as a HF directory.
    Like Llama-2's, it puts BOS before a text encoded with special tokens (what eval's reference scorers do),
    so the tiny models of tests and the demo are scored the way a real Llama-2 is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[bos])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    out = Path(out)
    with staged_dir(out, kind="tokenizer") as tmp:
        fast.save_pretrained(str(tmp))
    return out


def encode_chunk(encoder: Encoder, texts: list[str], sft: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Finished documents for a chunk: (flat ids, lengths, prompt lengths or None), BOS/EOS included.

    Continual: each text is a document, [BOS] text [EOS]. SFT: texts alternate prompt, response, and a document is
    [BOS] prompt response [EOS] whose first len([BOS] prompt) tokens carry no loss. Flattening runs in C
    (itertools.chain into numpy) and BOS/EOS are placed by index, so no token is touched twice in Python.
    """
    ids = encoder.encode_batch(texts)
    piece = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    body = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(piece.sum()))
    content = piece[0::2] + piece[1::2] if sft else piece
    bos, eos = encoder.info.bos_id, encoder.info.eos_id
    extra = 1 + (bos is not None)
    lengths = content + extra
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # the on-disk dtype already: half the bytes through the pipe back to the writer when the vocabulary fits
    flat = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint16 if encoder.info.vocab_size <= 2**16
                    else np.int32)
    body_mask = np.ones(flat.size, dtype=bool)
    if bos is not None:
        flat[starts] = bos
        body_mask[starts] = False
    flat[ends - 1] = eos
    body_mask[ends - 1] = False
    flat[body_mask] = body
    prompt_lens = piece[0::2] + (bos is not None) if sft else None
    return flat, lengths, prompt_lens
