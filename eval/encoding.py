"""The one way eval turns a prompt into token ids, for scoring options and for generating alike.

Two conventions, each its reference's: `bos=None` encodes as lm-evaluation-harness 0.4's HFLM.tok_encode and the
MMLU/CMMLU scripts' `tokenizer(prompt)` do, with the tokenizer's own special tokens (BOS for Llama-2) unless the
text already starts with BOS; `bos=True` encodes the text alone and puts BOS in front, as training saw every SFT
document (data_prep never lets the tokenizer add specials); `bos=False` encodes the text alone."""

from __future__ import annotations


def encode(tok, text: str, bos: bool | None = None) -> list[int]:
    if bos is None:
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        starts_with_bos = prefix is not None and text.startswith(tok.decode([prefix]))
        return tok(text, add_special_tokens=not starts_with_bos)["input_ids"]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return [tok.bos_token_id, *ids] if bos and tok.bos_token_id is not None else ids
