"""`medtrain contamination`: which eval questions the training data holds, verbatim or nearly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtrain.cli.common import AnswerIndex, AnswerIndexOpt, ReplaceOpt, say, user_errors
from medtrain.contamination.check import DEFAULT_MIN_RATIO, DEFAULT_NGRAM, ContaminationRequest, check, summary_table
from medtrain.contamination.questions import parse_eval


def contamination(
    train: Annotated[list[Path], typer.Option("--train", help="A prepared dataset (`medtrain prep` output); "
                                              "repeat for several, all from one tokenizer.")],
    eval_sets: Annotated[list[str], typer.Option("--eval", help="TASK=PATH, what `medtrain eval TASK --data` takes "
                                                 "(cmexam, mmlu, cmmlu, medqa, medmcqa); repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for contaminated.jsonl and summary.json.")],
    ngram: Annotated[int, typer.Option(help="Tokens in a shared window that makes a candidate.")] = DEFAULT_NGRAM,
    min_ratio: Annotated[float, typer.Option(help="Levenshtein ratio of question and training span that "
                                             "confirms a candidate.")] = DEFAULT_MIN_RATIO,
    workers: Annotated[int | None, typer.Option(help="Processes scanning (default: every core).")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="The datasets' tokenizer, when the path their manifests "
                                                   "record is not on this machine.")] = None,
    answer_index: AnswerIndexOpt = AnswerIndex.auto,
    overwrite: ReplaceOpt = False,
) -> None:
    """Flag eval questions found, verbatim or nearly, in the training data.

    Example: medtrain contamination --train data/prepared/huatuo --eval cmexam=data/cmexam/val.csv
    --eval cmmlu=data/cmmlu --out results/contamination
    """
    with user_errors(out):
        request = ContaminationRequest(train, [parse_eval(e) for e in eval_sets], out, ngram, min_ratio, workers,
                                       tokenizer, answer_index.base(), overwrite)
        summary = check(request, say)
    typer.echo(summary_table(summary))
    typer.echo(f"-> {out / 'contaminated.jsonl'}; leave them out with `medtrain eval TASK ... --exclude "
               f"{out / 'contaminated.jsonl'}`")
