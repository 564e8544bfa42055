"""What `medtrain prep SOURCE` asks for, as one value, and `prepare(request)`, which fills in the paper's
defaults (said, never silent), resolves hub ids and stages the inputs, and runs the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core import hub
from medtrain.core.publish import refuse_existing
from medtrain.data_prep.format import DatasetError
from medtrain.data_prep.inputs import DEFAULT_INPUTS, staged_inputs
from medtrain.data_prep.pipeline import prep

PAPER_TOKENIZER = "meta-llama/Llama-2-13b-hf"
PAPER_OUT = {"huatuo": Path("data/huatuo_encyclopedia")}
"""Where the paper recipes read each source, so `medtrain prep huatuo` with nothing named feeds the paper's run."""
PAPER_VAL_FRACTION = 0.005


@dataclass
class PrepRequest:
    source: str
    inputs: list[str] = field(default_factory=list)
    tokenizer: str = PAPER_TOKENIZER
    out: Path | None = None
    mode: str | None = None
    seq_len: int = 4096
    workers: int = 0
    overwrite: bool = False
    split: str = "train"
    answer_index: int | None = None
    """What MedMCQA's answer index counts from (0 or 1); None: read from the files."""
    allow_missing_explanations: bool = False
    val_fraction: float = 0.0


def with_paper_defaults(request: PrepRequest) -> tuple[PrepRequest, list[str]]:
    """The request with what it leaves out taken from the paper's setup, and the list of what was taken."""
    r, chosen = request, []
    if not r.inputs:
        if r.source not in DEFAULT_INPUTS:
            raise DatasetError(f"prep {r.source} needs --input (a file, folder or Hugging Face data set id)")
        r.inputs = [DEFAULT_INPUTS[r.source]]
        chosen.append(f"input {r.inputs[0]} (split {r.split})")
    if r.out is None:
        if r.source not in PAPER_OUT:
            raise DatasetError(f"prep {r.source} needs --out DIR")
        r.out = PAPER_OUT[r.source]
        chosen.append(f"out {r.out} (what recipes/paper reads)")
        if not r.val_fraction:
            r.val_fraction = PAPER_VAL_FRACTION
            chosen.append(f"{r.val_fraction:.1%} held out as {r.out / 'val'} (the recipe's val_data)")
    if r.tokenizer == PAPER_TOKENIZER:
        chosen.append(f"tokenizer {r.tokenizer}")
    return r, chosen


def prepare(request: PrepRequest, say: Callable[[str], None] = print) -> dict:
    """Prepare the dataset a request names; returns its manifest (the training side's when a split is held out).
    The output is refused before anything is resolved or downloaded when it exists and --overwrite is not given."""
    r, chosen = with_paper_defaults(request)
    if chosen:
        say(f"prep {r.source}: the paper's defaults: {'; '.join(chosen)}")
    refuse_existing(r.out, r.overwrite)
    tok = hub.resolve_tokenizer(r.tokenizer, what="--tokenizer")
    with staged_inputs(r.inputs, r.split, r.out) as found:
        origins = {"inputs": found.origins, "tokenizer": tok.provenance()} if found.origins or tok.hub_id else None
        manifest = prep(r.source, found.files, tok.path, r.out, mode=r.mode, seq_len=r.seq_len,
                        workers=r.workers or None, overwrite=r.overwrite, hub=origins, val_fraction=r.val_fraction,
                        answer_index=r.answer_index, allow_missing_explanations=r.allow_missing_explanations)
    if r.val_fraction:
        say(f"held out {manifest['split']['val_docs']:,} documents ({r.val_fraction:.2%}) as {r.out / 'val'}; "
            f"train with val_data: {r.out / 'val'}")
    return manifest
