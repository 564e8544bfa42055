"""`medtrain eval cmexam|mmlu|cmmlu|medqa|medmcqa`: score a model (or given outputs) on one benchmark, in this
process or across the ranks of a hostfile. eval.run is imported inside `run_eval`, on purpose: it loads torch
and transformers, which `medtrain eval ... --help` does not need."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtrain.cli.common import AnswerIndex, AnswerIndexOpt, LimitOpt, ReplaceOpt, say, user_errors
from medtrain.core import hub
from medtrain.core.publish import refuse_existing
from medtrain.experiments.eval_across import eval_across
from medtrain.experiments.eval_defaults import cmexam_inputs

eval_app = typer.Typer(help="Evaluate a Hugging Face model directory (or score given outputs).", no_args_is_help=True)

DeviceOpt = Annotated[str, typer.Option(help="auto (the GPU when there is one) | cpu | cuda. A model larger than "
                                        "one GPU is spread over the node's GPUs.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (the stored dtype; fp32 checkpoints run in bf16/fp16 on a GPU) | "
                                       "fp16 | bf16 | fp32.")]
McBatchOpt = Annotated[str, typer.Option(help="Prompts per forward pass, or auto: sized to the free GPU memory "
                                         "(8 on the CPU).")]
EvalOutOpt = Annotated[Path, typer.Option("--out", help="Directory for results.json, predictions.jsonl, table.md.")]
EvalHostsOpt = Annotated[Path | None, typer.Option("--hosts", help="Spread the questions over this hostfile's ranks "
                                                   "(through --launcher); results equal a single process's.")]
EvalLauncherOpt = Annotated[str, typer.Option("--launcher", help="With --hosts: local | pdsh | slurm | openmpi.")]
CmexamDataOpt = Annotated[Path | None, typer.Option(help="CMExam CSV (Question, Options, Answer[, annotations]); "
                                                    "default data/cmexam/test_with_annotations.csv, the release's "
                                                    "test split.")]
CmexamOutOpt = Annotated[Path | None, typer.Option("--out", help="Directory for results.json, predictions.jsonl, "
                                                   "table.md (default results/cmexam/NAME).")]
CmexamModelOpt = Annotated[str | None, typer.Option("--model", help="Hugging Face model directory or hub id "
                                                    "(default: the export of the paper's SFT run, "
                                                    "runs/sft_cmexam_reasoning/export).")]
PredictionsOpt = Annotated[Path | None, typer.Option(help="Score these outputs (jsonl: id, output) instead.")]
TemplateOpt = Annotated[str | None, typer.Option(help="Prompt template (default: the model's SFT template).")]
ExtractOpt = Annotated[str | None, typer.Option(help="How an answer is read from the output. hard: only the '答案: X' "
                                                "line the SFT template taught (else no answer); paper: Guo & Hua's "
                                                "rules for base models — option letters (答案是A和D = AD), then "
                                                "option texts, then the closest option by Levenshtein; cmexam: "
                                                "CMExam's parser, every option letter or text mentioned. Default: "
                                                "hard for Alpaca SFT templates, paper for plain prompts.")]
GenBatchOpt = Annotated[str, typer.Option(help="Questions per generate call, or auto: the largest whose KV cache "
                                          "fits the free GPU memory (16 on the CPU).")]
NewTokensOpt = Annotated[int | None, typer.Option(help="Default 256, as in the paper.")]
ShotsOpt = Annotated[int, typer.Option(help="Few-shot examples from dev.")]
ScoringOpt = Annotated[str, typer.Option(help="original: the MMLU/CMMLU scripts' rule, the highest letter logit "
                                         "after '答案是：' / 'Answer:'. harness: lm-evaluation-harness 0.4's, the "
                                         "highest log-likelihood of ' A'..' D' after its own prompt. Both encode "
                                         "with the tokenizer's special tokens (BOS for Llama-2), as their references "
                                         "do; the two pick different letters, so results record which one.")]
ExcludeOpt = Annotated[Path | None, typer.Option(help="Leave out the questions of this contaminated.jsonl "
                                                "(`medtrain contamination`) and score the clean subset; results.json "
                                                "records what was left out.")]
SubjectOpt = Annotated[list[str] | None, typer.Option("--subject", help="Only this subject (file stem, e.g. "
                                                      "anatomy); repeat for several. Default: every subject.")]


def model_dir(model: str | None) -> dict:
    """`model_dir` (a hub id's snapshot folder, core.hub, or the directory as given) and, for a hub id,
    `model_source` (id and revision, which results.json records and tables name it by)."""
    if model is None:
        return {"model_dir": None}
    resolved = hub.resolve_model(model, what="--model")
    return {"model_dir": resolved.path, "model_source": resolved.provenance() if resolved.hub_id else None}


def left_out(results: dict) -> str:
    return f" ({results['excluded']['questions']} left out by --exclude)" if "excluded" in results else ""


def run_eval(task: str, kwargs: dict, out: Path, hosts: Path | None, launcher: str) -> dict:
    """In this process, or across the ranks of a hostfile when --hosts is given."""
    if hosts is not None and kwargs.get("model_dir") is not None:
        return eval_across(task, kwargs, out, hosts, launcher)
    from medtrain.eval.run import run_task

    return run_task(task, out, **kwargs)


@eval_app.command("cmexam")
def eval_cmexam(data: CmexamDataOpt = None, out: CmexamOutOpt = None, model: CmexamModelOpt = None,
                predictions: PredictionsOpt = None, template: TemplateOpt = None, extract: ExtractOpt = None,
                batch_size: GenBatchOpt = "auto", device: DeviceOpt = "auto", dtype: DtypeOpt = "auto",
                max_new_tokens: NewTokensOpt = None, limit: LimitOpt = None, hosts: EvalHostsOpt = None,
                launcher: EvalLauncherOpt = "local", exclude: ExcludeOpt = None, overwrite: ReplaceOpt = False
                ) -> None:
    """Greedy generation, answer extraction, accuracy and weighted F1.

    Example: medtrain eval cmexam   (the paper's SFT export on data/cmexam/test_with_annotations.csv)
    Example: medtrain eval cmexam --model runs/sft/export --data test.csv --out results/sft-cmexam
    """
    with user_errors(out):
        inputs = cmexam_inputs(model, predictions, data, out)
        if inputs.chosen:
            say(f"eval cmexam: {'; '.join(inputs.chosen)}")
        out = inputs.out
        refuse_existing(out, overwrite)
        r = run_eval("cmexam", {"data": inputs.data, **model_dir(inputs.model), "predictions": predictions,
                                "template": template, "extract_mode": extract, "batch_size": batch_size,
                                "max_new_tokens": max_new_tokens, "limit": limit, "device": device, "dtype": dtype,
                                "exclude": exclude},
                     out, hosts, launcher)
    m = r["metrics"]
    typer.echo(f"CMExam: acc {m['acc']:.2f}  weighted F1 {m['weighted_f1']:.2f}  ({m['n']} questions{left_out(r)}, "
               f"{m['no_answer']} no answer, extract {r['extract']}) -> {out}")


def _mc_command(task: str, title: str, layout: str, default_shots: int = 5) -> None:
    """`medtrain eval mmlu|cmmlu|medqa|medmcqa`: the same options for every multiple-choice task (MedMCQA adds
    --answer-index, as `prep medmcqa` has)."""
    def command(model: Annotated[str, typer.Option(help="Hugging Face model directory or hub id.")],
                data: Path, out: EvalOutOpt, shots: ShotsOpt = default_shots, scoring: ScoringOpt = "original",
                batch_size: McBatchOpt = "auto", limit: LimitOpt = None, subject: SubjectOpt = None,
                device: DeviceOpt = "auto", dtype: DtypeOpt = "auto", hosts: EvalHostsOpt = None,
                launcher: EvalLauncherOpt = "local", exclude: ExcludeOpt = None, overwrite: ReplaceOpt = False,
                answer_index: AnswerIndexOpt = AnswerIndex.auto) -> None:
        with user_errors(out):
            refuse_existing(out, overwrite)
            r = run_eval(task, {**model_dir(model), "data": data, "shots": shots, "scoring": scoring,
                                "batch_size": batch_size, "limit": limit, "subjects": subject or None,
                                "device": device, "dtype": dtype, "answer_index": answer_index.base(),
                                "exclude": exclude},
                         out, hosts, launcher)
        m = r["metrics"]
        typer.echo(f"{task.upper()} {shots}-shot ({scoring}): acc {m['acc']:.2f} ({m['overall']}; micro "
                   f"{m['acc_micro']:.2f}, macro {m['acc_macro']:.2f}), {m['n']} questions{left_out(r)}, "
                   f"{m['truncated_prompts']} truncated -> {out}")
    command.__annotations__["data"] = Annotated[Path, typer.Option(help=f"{title} folder with {layout}.")]
    if task != "medmcqa":
        command.__annotations__["answer_index"] = Annotated[AnswerIndex, typer.Option(hidden=True)]
    command.__doc__ = (f"{title}, {default_shots}-shot by default.\n\nExample: medtrain eval {task} --model "
                       f"runs/sft/export --data data/{task} --out results/{task}")
    eval_app.command(task)(command)


_mc_command("mmlu", "MMLU", "dev/ and test/ (headerless CSVs)")
_mc_command("cmmlu", "CMMLU", "dev/ and test/ (CSVs with a header)")
_mc_command("medqa", "MedQA (USMLE, 4 or 5 options)", "test.jsonl in any public layout (official {question, "
            "options, answer_idx}, bigbio, plain lists, or the GBaker copy's {sent1, ending0..3, label}) and "
            "dev.jsonl for --shots", default_shots=0)
_mc_command("medmcqa", "MedMCQA", "test.jsonl ({question, opa..opd, cop}; cop from 0 or 1, read from the file) and "
            "dev.jsonl for --shots", default_shots=0)
