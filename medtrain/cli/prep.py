"""`medtrain prep SOURCE|mix|inspect` and `medtrain tokenizer`: raw data -> offline-tokenized datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtrain.cli.common import AnswerIndex, AnswerIndexOpt, ReplaceOpt, say, user_errors
from medtrain.core.publish import refuse_existing
from medtrain.data_prep.format import DatasetError
from medtrain.data_prep.inspect import inspect_dataset
from medtrain.data_prep.mix import mix, parse_weighted
from medtrain.data_prep.request import PAPER_TOKENIZER, PrepRequest, prepare
from medtrain.data_prep.sources import SOURCES, Source
from medtrain.data_prep.tokenizer import tokenizer_corpus, train_bpe_tokenizer

prep_app = typer.Typer(help="Raw data -> offline-tokenized memory-mapped datasets.", no_args_is_help=True)

InputsOpt = Annotated[list[str] | None, typer.Option("--input", help="Input file, data set folder or Hugging Face "
                                                     "data set id (repeatable).")]
TokOpt = Annotated[str, typer.Option(help="Tokenizer directory (tokenizer.model and/or tokenizer.json) or Hugging "
                                     "Face model id.")]
OutOpt = Annotated[Path | None, typer.Option(help="Dataset directory to create.")]
SeqOpt = Annotated[int, typer.Option(help="Training sequence length the counts are reported for.")]
WorkersOpt = Annotated[int, typer.Option(help="Encoding processes (default: all cores).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset.")]
SplitOpt = Annotated[str, typer.Option(help="Split to read from a data set folder or hub id.")]
ModeOpt = Annotated[str, typer.Option(help="answer_only | with_reasoning (answer then explanation).")]
ValFractionOpt = Annotated[float, typer.Option(help="Hold out this fraction of the documents (chosen by a hash of "
                                              "each, so reruns agree) as OUT/val for validation (val_data:).")]
AllowMissingOpt = Annotated[bool, typer.Option(
    "--allow-missing-explanations", help="Prepare with_reasoning data even when no record has an explanation.")]


def run_prep(request: PrepRequest) -> None:
    """What every `medtrain prep SOURCE` command ends in: prepare, then one line of what was written."""
    with user_errors(request.out):
        m = prepare(request, say)
    skipped, used = sum(m["stats"]["skipped"].values()), m["stats"]["records"]
    typer.echo(f"wrote {request.out}: {m['num_docs']:,} documents, {m['num_tokens']:,} tokens "
               f"({used + skipped:,} records read: {used:,} used, {skipped:,} skipped)")


def _prep_command(src: Source) -> None:
    """`medtrain prep NAME` for one entry of data_prep.sources.SOURCES: SFT sources take --mode and
    --allow-missing-explanations, numbered-answer sources --answer-index too."""
    def command(input: InputsOpt = None, tokenizer: TokOpt = PAPER_TOKENIZER, out: OutOpt = None,
                mode: ModeOpt = src.default_mode or "", answer_index: AnswerIndexOpt = AnswerIndex.auto,
                allow_missing_explanations: AllowMissingOpt = False, seq_len: SeqOpt = 4096,
                workers: WorkersOpt = 0, overwrite: OverwriteOpt = False, split: SplitOpt = "train",
                val_fraction: ValFractionOpt = 0.0) -> None:
        run_prep(PrepRequest(src.name, list(input or []), tokenizer, out, mode if src.kind == "sft" else None,
                             seq_len, workers, overwrite, split, answer_index.base(), allow_missing_explanations,
                             val_fraction))
    hidden = [] if src.kind == "sft" else ["mode", "allow_missing_explanations"]
    hidden += [] if src.numbered_answers else ["answer_index"]
    types = {"mode": str, "allow_missing_explanations": bool, "answer_index": AnswerIndex}
    for name in hidden:  # options a source does not take stay out of its --help
        command.__annotations__[name] = Annotated[types[name], typer.Option(hidden=True)]
    command.__doc__ = f"{src.about}\n\nExample: {src.example}"
    prep_app.command(src.name)(command)


for _source in SOURCES.values():
    _prep_command(_source)


@prep_app.command("mix")
def prep_mix(input: Annotated[list[str], typer.Option("--input", help="DIR:WEIGHT (repeatable).")], out: OutOpt,
             seed: Annotated[int, typer.Option(help="Seed for fractional weights.")] = 0,
             overwrite: OverwriteOpt = False) -> None:
    """Mix prepared datasets by weight (times each is taken).

    Example: medtrain prep mix --input data/cmexam:1 --input data/medqa:1 --input data/medmcqa:1 --out data/table4
    """
    with user_errors(out):
        refuse_existing(out, overwrite)
        m = mix([parse_weighted(i) for i in input], out, seed=seed, overwrite=overwrite)
    taken = ", ".join(f"{s['path']} x{s['weight']:g} = {s['docs_taken']:,}" for s in m["sources"])
    typer.echo(f"wrote {out}: {taken}")


@prep_app.command("inspect")
def prep_inspect(dataset: Annotated[Path, typer.Argument(help="Dataset directory.")],
                 sample: Annotated[int, typer.Option(help="Document to decode.")] = 0,
                 tokenizer: Annotated[Path | None, typer.Option(help="Decode with this tokenizer.")] = None) -> None:
    """Manifest, length histogram and a decoded document. Example: medtrain prep inspect data/cmexam --sample 3"""
    with user_errors():
        text = inspect_dataset(dataset, sample, tokenizer)
    typer.echo(text)


def tokenizer(input: Annotated[list[Path], typer.Option("--input", help="Text/CSV/JSONL files (repeatable).")],
              out: Annotated[Path, typer.Option(help="Tokenizer directory to write.")],
              vocab_size: Annotated[int, typer.Option(help="Vocabulary size.")] = 2000,
              overwrite: ReplaceOpt = False) -> None:
    """Train a small byte-level BPE tokenizer locally (for tiny models; real runs use the model's own).

    Example: medtrain tokenizer --input corpus.jsonl --out tok --vocab-size 2000
    """
    with user_errors(out):
        missing = [str(p) for p in input if not p.is_file()]
        if missing:
            raise DatasetError(f"no such input file(s): {', '.join(missing)}")
        refuse_existing(out, overwrite)
        texts = tokenizer_corpus(input)
        say(f"training a {vocab_size}-token BPE tokenizer on {len(texts):,} lines ...")
        train_bpe_tokenizer(texts, out, vocab_size=vocab_size)
    typer.echo(f"wrote {out} (vocab {vocab_size}, trained on {len(texts):,} lines)")
