"""The `medtrain` command: a thin table over library functions. Exit codes: 0 ok, 2 a user error, 1 a failed run."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from medtrain.core.ds_config import PRESETS, ConfigError, precision_warning, write_ds_config
from medtrain.core.errors import RunFailed, UserError
from medtrain.core.publish import ExistsError, check_replaceable
from medtrain.core.recipe import load_recipe
from medtrain.data_prep.sources import SOURCES, Source
from medtrain.launch.hostfile import read_hostfile, render_hostfile, write_hostfile

app = typer.Typer(help="Continual pretraining, SFT and evaluation of Llama-2 for medical QA on DeepSpeed ZeRO-3.",
                  pretty_exceptions_show_locals=False, no_args_is_help=True, add_completion=False)


def _version(value: bool) -> None:
    if value:
        from medtrain.core.provenance import versions

        v = versions()
        typer.echo(f"medtrain {v['medtrain']} (commit {v['commit']}; torch {v['torch']}, deepspeed {v['deepspeed']}, "
                   f"transformers {v['transformers']})")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print medtrain's version and its key dependencies'.")] = False
         ) -> None:
    """Continual pretraining, SFT and evaluation of Llama-2 for medical QA on DeepSpeed ZeRO-3."""
    import os

    from medtrain.core.log import setup_logging
    from medtrain.core.provenance import untested_versions

    setup_logging()

    old = untested_versions() if os.environ.get("RANK", "0") == "0" else []  # once per job, not per rank
    if old:
        typer.echo(f"warning: untested versions: {'; '.join(old)}; medtrain is tested with the bounds in its "
                   "pyproject.toml", err=True)


config_app = typer.Typer(help="Write configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
eval_app = typer.Typer(help="Evaluate a Hugging Face model directory (or score given outputs).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
train_app = typer.Typer(help="Per-rank training entry points (what `medtrain launch` starts).", no_args_is_help=True)
app.add_typer(train_app, name="train")
prep_app = typer.Typer(help="Raw data -> offline-tokenized memory-mapped datasets.", no_args_is_help=True)
app.add_typer(prep_app, name="prep")
recipes_app = typer.Typer(help="The built-in recipes: list them, copy one out to edit.", invoke_without_command=True)
app.add_typer(recipes_app, name="recipes")


@contextmanager
def user_errors(out: Path | None = None):
    """The one place the CLI turns exceptions into exit codes: a UserError (exit 2) or a failed run (exit 1) is
    one line on stderr; a full disk while writing `out` is a UserError too (the writers have removed their
    staging); anything else is a bug and keeps its traceback."""
    try:
        yield
    except (UserError, RunFailed) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=e.exit_code) from None
    except Exception as e:
        from medtrain.core.disk import disk_full_error, is_disk_full

        if not is_disk_full(e):
            raise
        typer.echo(f"error: {disk_full_error(Path(out or getattr(e, 'filename', None) or '.'))}", err=True)
        raise typer.Exit(code=2) from None


ReplaceOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]


def refuse_existing(out: Path, overwrite: bool, what: str = "directory") -> None:
    """One rule for every command that writes an output: an existing one is replaced only when asked, and only
    when it is medtrain's own (core.publish.check_replaceable), checked before any work starts (`medtrain sweep`
    is the exception: it continues the sweep directory it is given)."""
    if Path(out).exists() and not overwrite:
        raise ExistsError(f"{out} already exists; pass --overwrite to replace it")
    if overwrite:
        check_replaceable(out, what=what)


RecipeOpt = Annotated[str, typer.Option("--recipe", help="Run recipe: a YAML path or a built-in name such as "
                                        "paper/continual_llama2_13b (`medtrain recipes` lists them).")]
PAPER_CONTINUAL = "paper/continual_llama2_13b"


STOPPED_BY_SIGNAL = {128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}


def _paper_recipe_unless(recipe: str | None) -> str:
    """`plan` and `launch` with no --recipe take the paper's continual run, and say so."""
    if recipe is None:
        typer.echo(f"recipe: {PAPER_CONTINUAL} (the paper's continual pretraining; --recipe to choose another)",
                   err=True)
    return recipe or PAPER_CONTINUAL


HostsOpt = Annotated[Path, typer.Option("--hosts", help="Hostfile ('host slots=N' lines).")]
OverrideOpt = Annotated[list[str] | None, typer.Option("--set", help="Recipe override key=value (repeatable).")]


@config_app.command("deepspeed")
def config_deepspeed(
    out: Annotated[Path, typer.Option(help="Where to write the JSON.")],
    preset: Annotated[str, typer.Option(help=f"One of: {', '.join(PRESETS)}.")] = "v100-zero3-fp16",
    recipe: Annotated[Path | None, typer.Option(help="Recipe: batch, lr, schedule and model from here.")] = None,
    hosts: Annotated[Path | None, typer.Option(help="Hostfile: the world size from here.")] = None,
    overwrite: ReplaceOpt = False,
) -> None:
    """DeepSpeed ZeRO-3 JSON for a preset.

    Example: medtrain config deepspeed --preset v100-zero3-fp16 --recipe recipes/paper/continual_llama2_13b.yaml
    --hosts hostfiles/v100x20 --out ds_configs/zero3_v100_fp16.json
    """
    from medtrain.launch.plan import deepspeed_config_for

    with user_errors(out):
        refuse_existing(out, overwrite, what="file")
        config = deepspeed_config_for(preset, recipe, hosts)
        write_ds_config(config, out)
    precision = "fp16" if config["fp16"]["enabled"] else "bf16" if config["bf16"]["enabled"] else "fp32"
    said = precision_warning(preset, precision)
    if said:
        typer.echo(f"warning: {said}", err=True)
    zero = config["zero_optimization"]
    micro, accum = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
    ranks = config["train_batch_size"] // (micro * accum)
    typer.echo(f"wrote {out}: ZeRO stage {zero['stage']}, {precision}, train_batch_size {config['train_batch_size']} "
               f"= {micro} micro x {accum} accum x {ranks} ranks")


@app.command()
def hostfile(
    out: Annotated[Path, typer.Option(help="Where to write the hostfile.")],
    nodes: Annotated[int, typer.Option(help="Number of nodes.")] = 20,
    slots: Annotated[int, typer.Option(help="GPUs per node.")] = 6,
    prefix: Annotated[str, typer.Option(help="Hostname prefix: node -> node01, node02, ...")] = "node",
    overwrite: ReplaceOpt = False,
) -> None:
    """Write a DeepSpeed hostfile.

    Example: medtrain hostfile --nodes 20 --slots 6 --prefix node --out hostfiles/v100x20
    """
    with user_errors(out):
        refuse_existing(out, overwrite, what="file")
        write_hostfile(render_hostfile(nodes, slots, prefix), out)
    typer.echo(f"wrote {out}: {nodes} nodes x {slots} slots = {nodes * slots} ranks")


@app.command()
def plan(
    hosts: HostsOpt,
    recipe: Annotated[str | None, typer.Option("--recipe", help="Run recipe: a YAML path or a built-in name "
                                               f"(default: {PAPER_CONTINUAL}, as for launch).")] = None,
    gpu_mem_gb: Annotated[float, typer.Option(help="Memory per GPU in GB (default: the recipe's preset's: V100 32, "
                                              "A100 40 or 80, H100 80).")] = 0.0,
    peak_tflops: Annotated[float, typer.Option(help="Peak TFLOPS per GPU in the training dtype (default: the "
                                               "recipe's peak_tflops, else its preset's: V100 125, A100 312, "
                                               "H100 989).")] = 0.0,
    mfu: Annotated[float, typer.Option(help="Assumed model FLOPs utilisation for the time estimate.")] = 0.25,
    set_: OverrideOpt = None,
) -> None:
    """Memory per GPU, steps, tokens and time; exits 2 when it does not fit (a recipe or hostfile to change).

    Example: medtrain plan --recipe paper/continual_llama2_13b --hosts hostfiles/v100x20
    """
    from medtrain.launch.plan import Hardware, make_plan

    recipe = _paper_recipe_unless(recipe)
    with user_errors():
        if not (0 < mfu <= 1):
            raise ConfigError(f"--mfu {mfu} must be in (0, 1]")
        result = make_plan(load_recipe(recipe, set_), read_hostfile(hosts),
                           Hardware(gpu_mem_gb=gpu_mem_gb, peak_tflops=peak_tflops, mfu=mfu))
    typer.echo(result.render())
    if not result.fits:
        raise typer.Exit(code=2)


@app.command()
def launch(
    recipe: Annotated[str | None, typer.Option("--recipe", help="Run recipe: a YAML path or a built-in name "
                                               f"(default: {PAPER_CONTINUAL}, the paper's continual run).")] = None,
    hosts: Annotated[Path | None, typer.Option("--hosts", help="Hostfile ('host slots=N' lines); under slurm "
                                               "optional (--nodes/--gpus-per-node), its names become --nodelist.")]
    = None,
    launcher: Annotated[str, typer.Option(help="pdsh | slurm | openmpi | local.")] = "pdsh",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would run, node by node; start nothing.")]
    = False,
    check: Annotated[bool, typer.Option("--check", help="Preflight: reach every host, compare versions, "
                                        "all-reduce once.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest complete checkpoint.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --check waits for every rank.")] = 120.0,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for every rank (repeatable).")] = None,
    hang_timeout: Annotated[float | None, typer.Option(help="Seconds without a step before the run counts as hung "
                                                       "(recipe hang_timeout; 0: no watchdog).")] = None,
    max_restarts: Annotated[int | None, typer.Option(help="Relaunch a failed or hung run from its newest verified "
                                                     "checkpoint up to N times (recipe max_restarts).")] = None,
    spare_hosts: Annotated[Path | None, typer.Option(help="Hostfile of spare hosts: one replaces a host that fails "
                                                     "twice.")] = None,
    allow_shrink: Annotated[bool, typer.Option("--allow-shrink", help="Drop a host that fails twice and go on "
                                               "with fewer ranks, same global batch.")] = False,
    nodes: Annotated[int, typer.Option(help="slurm: nodes to allocate.")] = 0,
    gpus_per_node: Annotated[int, typer.Option(help="slurm: ranks per node (one per GPU on GPU presets).")] = 0,
    partition: Annotated[str | None, typer.Option(help="slurm: --partition.")] = None,
    account: Annotated[str | None, typer.Option(help="slurm: --account.")] = None,
    time_limit: Annotated[str | None, typer.Option("--time", help="slurm: --time (e.g. 12:00:00).")] = None,
    time_warning: Annotated[int, typer.Option(help="slurm, with --time: seconds before the limit at which every "
                                              "rank saves and stops, and the next job resumes there (0: off).")]
    = 300,
    qos: Annotated[str | None, typer.Option(help="slurm: --qos.")] = None,
    sbatch_arg: Annotated[list[str] | None, typer.Option("--sbatch-arg", help="slurm: one more #SBATCH line, "
                                                         "e.g. --sbatch-arg=--exclusive (repeatable).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="slurm: submit and return the job id; do not wait.")]
    = False,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer directory or Hugging Face id (recipe tokenizer; "
                                                  "default: the model's own).")] = None,
    set_: OverrideOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh in an output_dir that holds a run: "
                                            "the old run is moved aside to OUTPUT_DIR.old-TIME, not deleted.")]
    = False,
) -> None:
    """Start the recipe's training on every rank through the real deepspeed launcher, watch it, restart it.

    Example: medtrain launch --hosts hostfiles/v100x20 --recipe paper/continual_llama2_13b --dry-run
    """
    from medtrain.launch.run import prepare_launch, start

    recipe = _paper_recipe_unless(recipe)
    overrides = list(set_ or [])
    if tokenizer is not None:
        overrides.append(f"tokenizer={tokenizer}")
    if hang_timeout is not None:
        overrides.append(f"hang_timeout={hang_timeout}")
    if max_restarts is not None:
        overrides.append(f"max_restarts={max_restarts}")
    from medtrain.launch.slurm import SlurmOptions

    slurm = SlurmOptions(partition=partition, account=account, time=time_limit, qos=qos, warn_seconds=time_warning,
                         sbatch_args=list(sbatch_arg or []))
    with user_errors():
        prepared = prepare_launch(recipe, hosts, launcher, overrides=overrides, env=env or [], resume=resume,
                                  dry_run=dry_run or check, check=check, slurm=slurm, nodes=nodes,
                                  gpus_per_node=gpus_per_node, overwrite=overwrite)
    if prepared.finished:
        typer.echo(f"medtrain: {prepared.finished}")
        return
    if dry_run:
        typer.echo(prepared.describe())
        return
    if check:
        from medtrain.launch.host_checks import expectations
        from medtrain.launch.preflight import run_preflight

        plan = prepared.plan
        typer.echo(f"weights: {plan.recipe.weights}\nchecking on every host: data, tokenizer"
                   f"{'' if plan.recipe.init == 'random' else ', model'} and {plan.disk_bytes / 2**30:.2f} GiB of room "
                   f"in {prepared.spec.run_dir}")
        with user_errors():
            report = run_preflight(prepared.spec, timeout=timeout, slurm=prepared.slurm,
                                   expect=expectations(plan.recipe, plan.disk_bytes))
        typer.echo(report.render())
        raise typer.Exit(code=0 if report.ok else 1)
    typer.echo(prepared.describe())
    with user_errors():
        code = start(prepared, resume=resume, spare_hosts=spare_hosts, allow_shrink=allow_shrink, detach=detach)
    if code != 0:
        if code not in STOPPED_BY_SIGNAL:  # a stop the user asked for was said by the supervisor, with its resume
            typer.echo(f"error: training exited with code {code}", err=True)
        raise typer.Exit(code=code if code in (1, 2) or code > 128 else 1)


@app.command()
def logs(run_dir: Annotated[Path, typer.Argument(help="A training run directory.")],
         rank: Annotated[int | None, typer.Option(help="This rank's own output and traceback instead of the "
                                                  "launcher's console.")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what is appended.")] = False,
         ) -> None:
    """The run's console as the user saw it (logs/launch.log), or one rank's output (logs/rankN.log).

    Example: medtrain logs runs/continual_llama2_13b --rank 15
    """
    from medtrain.launch.console import copy_log, run_log

    with user_errors():
        path = run_log(run_dir, rank)
    copy_log(path, sys.stdout.buffer, follow)


@app.command()
def checkpoints(run_dir: Annotated[Path, typer.Argument(help="A training run directory (or its checkpoints/).")],
                quick: Annotated[bool, typer.Option("--quick", help="Sizes only; skip reading the bytes back.")]
                = False) -> None:
    """List a run's checkpoints with step, size and state, verified against their manifests, and say which one
    `--resume` would pick.

    Example: medtrain checkpoints runs/continual_llama2_13b
    """
    from medtrain.core.checkpoint_files import listing

    lines = listing(run_dir, deep=not quick)
    if not lines:
        typer.echo(f"{run_dir}: no checkpoints")
        raise typer.Exit(code=1)
    typer.echo("\n".join(lines))


InputsOpt = Annotated[list[str] | None, typer.Option("--input", help="Input file, data set folder or Hugging Face "
                                                 "data set id (repeatable).")]
TokOpt = Annotated[str, typer.Option(help="Tokenizer directory (tokenizer.model and/or tokenizer.json) or Hugging "
                                     "Face model id.")]
OutOpt = Annotated[Path | None, typer.Option(help="Dataset directory to create.")]
SeqOpt = Annotated[int, typer.Option(help="Training sequence length the counts are reported for.")]
WorkersOpt = Annotated[int, typer.Option(help="Encoding processes (default: all cores).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset.")]
SplitOpt = Annotated[str, typer.Option(help="Split to read from a data set folder or hub id.")]
PAPER_TOKENIZER = "meta-llama/Llama-2-13b-hf"
# where the paper recipes read each source, so `medtrain prep huatuo` with nothing named feeds the paper's run
PAPER_OUT = {"huatuo": Path("data/huatuo_encyclopedia")}
PAPER_VAL_FRACTION = 0.005


def _prep(source: str, inputs: list[str] | None, tokenizer: str, out: Path | None, mode: str | None, seq_len: int,
          workers: int, overwrite: bool, split: str, answer_index: str = "auto",
          allow_missing_explanations: bool = False, val_fraction: float = 0.0) -> None:
    from medtrain.core import hub
    from medtrain.data_prep.inputs import DEFAULT_INPUTS, staged_inputs
    from medtrain.data_prep.pipeline import prep

    chosen = []
    if not inputs:
        if source not in DEFAULT_INPUTS:
            raise typer.BadParameter(f"prep {source} needs --input (a file, folder or Hugging Face data set id)",
                                     param_hint="--input")
        inputs = [DEFAULT_INPUTS[source]]
        chosen.append(f"input {inputs[0]} (split {split})")
    if out is None:
        if source not in PAPER_OUT:
            raise typer.BadParameter(f"prep {source} needs --out DIR", param_hint="--out")
        out = PAPER_OUT[source]
        chosen.append(f"out {out} (what recipes/paper reads)")
        if not val_fraction:
            val_fraction = PAPER_VAL_FRACTION
            chosen.append(f"{val_fraction:.1%} held out as {out / 'val'} (the recipe's val_data)")
    if tokenizer == PAPER_TOKENIZER:
        chosen.append(f"tokenizer {tokenizer}")
    if chosen:
        typer.echo(f"prep {source}: the paper's defaults: {'; '.join(chosen)}", err=True)
    with user_errors(out):
        refuse_existing(out, overwrite)  # before anything is resolved or downloaded
        tok = hub.resolve_tokenizer(tokenizer, what="--tokenizer")
        with staged_inputs(inputs, split, out) as found:
            origins = {"inputs": found.origins, "tokenizer": tok.provenance()} if found.origins or tok.hub_id else None
            m = prep(source, found.files, tok.path, out, mode=mode, seq_len=seq_len, workers=workers or None,
                     overwrite=overwrite, hub=origins, val_fraction=val_fraction,
                     answer_index=None if answer_index == "auto" else int(answer_index),
                     allow_missing_explanations=allow_missing_explanations)
        if val_fraction:
            typer.echo(f"held out {m['split']['val_docs']:,} documents ({val_fraction:.2%}) as {out / 'val'}; "
                       f"train with val_data: {out / 'val'}", err=True)
    skipped, used = sum(m["stats"]["skipped"].values()), m["stats"]["records"]
    typer.echo(f"wrote {out}: {m['num_docs']:,} documents, {m['num_tokens']:,} tokens "
               f"({used + skipped:,} records read: {used:,} used, {skipped:,} skipped)")


ModeOpt = Annotated[str, typer.Option(help="answer_only | with_reasoning (answer then explanation).")]


class AnswerIndex(StrEnum):
    auto = "auto"
    zero = "0"
    one = "1"


ValFractionOpt = Annotated[float, typer.Option(help="Hold out this fraction of the documents (chosen by a hash of "
                                              "each, so reruns agree) as OUT/val for validation (val_data:).")]
AllowMissingOpt = Annotated[bool, typer.Option(
    "--allow-missing-explanations", help="Prepare with_reasoning data even when no record has an explanation.")]
AnswerIndexOpt = Annotated[AnswerIndex, typer.Option(
    help="What the answer index counts from: 1 (MedMCQA's official release), 0 (its Hugging Face copy), or auto "
         "(read from the values in the files; all 1-3 is ambiguous and refused).")]


def _prep_command(src: Source) -> None:
    """`medtrain prep NAME` for one entry of data_prep.sources.SOURCES (SFT sources take --mode)."""
    if src.numbered_answers:
        def command(input: InputsOpt = None, tokenizer: TokOpt = PAPER_TOKENIZER, out: OutOpt = None,
                    mode: ModeOpt = src.default_mode or "", answer_index: AnswerIndexOpt = AnswerIndex.auto,
                    allow_missing_explanations: AllowMissingOpt = False, seq_len: SeqOpt = 4096,
                    workers: WorkersOpt = 0, overwrite: OverwriteOpt = False, split: SplitOpt = "train",
                    val_fraction: ValFractionOpt = 0.0) -> None:
            _prep(src.name, input, tokenizer, out, mode, seq_len, workers, overwrite, split, answer_index.value,
                  allow_missing_explanations, val_fraction)
    elif src.kind == "sft":
        def command(input: InputsOpt = None, tokenizer: TokOpt = PAPER_TOKENIZER, out: OutOpt = None,
                    mode: ModeOpt = src.default_mode or "", allow_missing_explanations: AllowMissingOpt = False,
                    seq_len: SeqOpt = 4096, workers: WorkersOpt = 0, overwrite: OverwriteOpt = False,
                    split: SplitOpt = "train", val_fraction: ValFractionOpt = 0.0) -> None:
            _prep(src.name, input, tokenizer, out, mode, seq_len, workers, overwrite, split,
                  allow_missing_explanations=allow_missing_explanations, val_fraction=val_fraction)
    else:
        def command(input: InputsOpt = None, tokenizer: TokOpt = PAPER_TOKENIZER, out: OutOpt = None,
                    seq_len: SeqOpt = 4096, workers: WorkersOpt = 0, overwrite: OverwriteOpt = False,
                    split: SplitOpt = "train", val_fraction: ValFractionOpt = 0.0) -> None:
            _prep(src.name, input, tokenizer, out, None, seq_len, workers, overwrite, split,
                  val_fraction=val_fraction)
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
    from medtrain.data_prep.mix import mix, parse_weighted

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
    from medtrain.data_prep.inspect import inspect_dataset

    with user_errors():
        text = inspect_dataset(dataset, sample, tokenizer)
    typer.echo(text)


RunSpecOpt = Annotated[Path | None, typer.Option("--run-spec", help="run_spec.json (launch writes one; without "
                                                "it the rank computes the same from the recipe).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest complete checkpoint.")]


@train_app.command("continual")
def train_continual(recipe: RecipeOpt, run_spec: RunSpecOpt = None, resume: ResumeOpt = False) -> None:
    """Continual pretraining on one rank of a DeepSpeed job.

    Example (under the launcher): deepspeed --num_gpus 2 --module medtrain train continual --recipe R
    """
    from medtrain.trainer import run_rank

    run_rank(recipe, "continual", run_spec, resume)


@train_app.command("sft")
def train_sft(recipe: RecipeOpt, run_spec: RunSpecOpt = None, resume: ResumeOpt = False) -> None:
    """Supervised fine-tuning (prompt masked from the loss) on one rank of a DeepSpeed job.

    Example (under the launcher): deepspeed --num_gpus 2 --module medtrain train sft --recipe R
    """
    from medtrain.trainer import run_rank

    run_rank(recipe, "sft", run_spec, resume)


@app.command()
def export(checkpoint: Annotated[Path, typer.Option(help="A checkpoint dir, or a run dir (newest checkpoint).")],
           out: Annotated[Path, typer.Option(help="Hugging Face model directory to write.")],
           overwrite: ReplaceOpt = False) -> None:
    """ZeRO-3 shards -> Hugging Face directory (safetensors, config, tokenizer, lineage).

    Example: medtrain export --checkpoint runs/continual/checkpoints/step_000750 --out models/continual-750
    """
    from medtrain.export import export_checkpoint

    with user_errors(out):
        refuse_existing(out, overwrite)
        path = export_checkpoint(checkpoint, out)
    typer.echo(f"wrote {path}")


ModelOpt = Annotated[str | None, typer.Option("--model", help="Hugging Face model directory or hub id (from the "
                                              "cache, else downloaded).")]


def _model_dir(model: str | None) -> dict:
    """`model_dir` (a hub id's snapshot folder, core.hub, or the directory as given) and, for a hub id,
    `model_source` (id and revision, which results.json records and tables name it by)."""
    from medtrain.core import hub

    if model is None:
        return {"model_dir": None}
    resolved = hub.resolve_model(model, what="--model")
    return {"model_dir": resolved.path, "model_source": resolved.provenance() if resolved.hub_id else None}


DeviceOpt = Annotated[str, typer.Option(help="auto (the GPU when there is one) | cpu | cuda. A model larger than "
                                        "one GPU is spread over the node's GPUs.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (the stored dtype; fp32 checkpoints run in bf16/fp16 on a GPU) | "
                                       "fp16 | bf16 | fp32.")]
McBatchOpt = Annotated[str, typer.Option(help="Prompts per forward pass, or auto: sized to the free GPU memory "
                                         "(8 on the CPU).")]
EvalOutOpt = Annotated[Path, typer.Option("--out", help="Directory for results.json, predictions.jsonl, table.md.")]
LimitOpt = Annotated[int | None, typer.Option(help="Only the first N questions (per subject for MMLU/CMMLU).")]
EvalHostsOpt = Annotated[Path | None, typer.Option("--hosts", help="Spread the questions over this hostfile's ranks "
                                                   "(through --launcher); results equal a single process's.")]
EvalLauncherOpt = Annotated[str, typer.Option("--launcher", help="With --hosts: local | pdsh | slurm | openmpi.")]


def _run_eval(task: str, kwargs: dict, out: Path, hosts: Path | None, launcher: str) -> dict:
    """In this process, or across the ranks of a hostfile when --hosts is given."""
    if hosts is not None and kwargs.get("model_dir") is not None:
        from medtrain.eval_launch import eval_across

        return eval_across(task, kwargs, out, hosts, launcher)
    from medtrain.eval.run import run_task

    return run_task(task, out, **kwargs)


@eval_app.command("cmexam")
def eval_cmexam(
    data: Annotated[Path | None, typer.Option(help="CMExam CSV (Question, Options, Answer[, annotations]); default "
                                              "data/cmexam/test_with_annotations.csv, the release's test split.")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for results.json, predictions.jsonl, table.md "
                                             "(default results/cmexam/NAME).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Hugging Face model directory or hub id (default: the "
                                              "export of the paper's SFT run, runs/sft_cmexam_reasoning/export).")]
    = None,
    predictions: Annotated[Path | None, typer.Option(help="Score these outputs (jsonl: id, output) instead.")]
    = None,
    template: Annotated[str | None, typer.Option(help="Prompt template (default: the model's SFT template).")]
    = None,
    extract: Annotated[str | None, typer.Option(help="How an answer is read from the output. hard: only the "
                                                "'答案: X' line the SFT template taught (else no answer); paper: Guo & "
                                                "Hua's rules for base models — option letters (答案是A和D = AD), then "
                                                "option texts, then the closest option by Levenshtein; cmexam: "
                                                "CMExam's parser, every option letter or text mentioned. Default: "
                                                "hard for Alpaca SFT templates, paper for plain prompts.")]
    = None,
    batch_size: Annotated[str, typer.Option(help="Questions per generate call, or auto: the largest whose KV "
                                            "cache fits the free GPU memory (16 on the CPU).")] = "auto",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    max_new_tokens: Annotated[int | None, typer.Option(help="Default 256, as in the paper.")] = None,
    limit: LimitOpt = None,
    hosts: EvalHostsOpt = None,
    launcher: EvalLauncherOpt = "local",
    overwrite: ReplaceOpt = False,
) -> None:
    """Greedy generation, answer extraction, accuracy and weighted F1.

    Example: medtrain eval cmexam   (the paper's SFT export on data/cmexam/test_with_annotations.csv)
    Example: medtrain eval cmexam --model runs/sft/export --data test.csv --out results/sft-cmexam
    """
    from medtrain.eval_defaults import cmexam_inputs

    with user_errors(out):
        inputs = cmexam_inputs(model, predictions, data, out)
        if inputs.chosen:
            typer.echo(f"eval cmexam: {'; '.join(inputs.chosen)}", err=True)
        out = inputs.out
        refuse_existing(out, overwrite)
        r = _run_eval("cmexam", {"data": inputs.data, **_model_dir(inputs.model), "predictions": predictions,
                                 "template": template,
                                 "extract_mode": extract, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                                 "limit": limit, "device": device, "dtype": dtype}, out, hosts, launcher)
    m = r["metrics"]
    typer.echo(f"CMExam: acc {m['acc']:.2f}  weighted F1 {m['weighted_f1']:.2f}  ({m['n']} questions, "
               f"{m['no_answer']} no answer, extract {r['extract']}) -> {out}")


def _eval_mc(task: str, model: str | None, data: Path, out: Path, shots: int, scoring: str, batch_size: str,
             limit: int | None, subjects: list[str] | None, device: str, dtype: str, hosts: Path | None,
             launcher: str, overwrite: bool, answer_index: str = "auto") -> None:
    with user_errors(out):
        refuse_existing(out, overwrite)
        r = _run_eval(task, {**_model_dir(model), "data": data, "shots": shots, "scoring": scoring,
                             "batch_size": batch_size, "limit": limit, "subjects": subjects or None,
                             "device": device, "dtype": dtype,
                             "answer_index": None if answer_index == "auto" else int(answer_index)}, out, hosts,
                            launcher)
    m = r["metrics"]
    typer.echo(f"{task.upper()} {shots}-shot ({scoring}): acc {m['acc']:.2f} ({m['overall']}; micro "
               f"{m['acc_micro']:.2f}, macro {m['acc_macro']:.2f}), {m['n']} questions, "
               f"{m['truncated_prompts']} truncated -> {out}")


ShotsOpt = Annotated[int, typer.Option(help="Few-shot examples from dev.")]
ScoringOpt = Annotated[str, typer.Option(help="original: the MMLU/CMMLU scripts' rule, the highest letter logit "
                                         "after '答案是：' / 'Answer:'. harness: lm-evaluation-harness 0.4's, the "
                                         "highest log-likelihood of ' A'..' D' after its own prompt. Both encode "
                                         "with the tokenizer's special tokens (BOS for Llama-2), as their references "
                                         "do; the two pick different letters, so results record which one.")]
SubjectOpt = Annotated[list[str] | None, typer.Option("--subject", help="Only this subject (file stem, e.g. "
                                                      "anatomy); repeat for several. Default: every subject.")]


def _mc_command(task: str, title: str, layout: str, default_shots: int = 5) -> None:
    """`medtrain eval mmlu|cmmlu|medqa|medmcqa`: the same options for every multiple-choice task (MedMCQA adds
    --answer-index, as `prep medmcqa` has)."""
    def command(model: Annotated[str, typer.Option(help="Hugging Face model directory or hub id.")],
                data: Path, out: EvalOutOpt,
                shots: ShotsOpt = default_shots, scoring: ScoringOpt = "original", batch_size: McBatchOpt = "auto",
                limit: LimitOpt = None, subject: SubjectOpt = None, device: DeviceOpt = "auto",
                dtype: DtypeOpt = "auto", hosts: EvalHostsOpt = None, launcher: EvalLauncherOpt = "local",
                overwrite: ReplaceOpt = False, answer_index: AnswerIndexOpt = AnswerIndex.auto) -> None:
        _eval_mc(task, model, data, out, shots, scoring, batch_size, limit, subject, device, dtype, hosts,
                 launcher, overwrite, answer_index.value)
    command.__annotations__["data"] = Annotated[Path, typer.Option(help=f"{title} folder with {layout}.")]
    if task != "medmcqa":
        command.__annotations__["answer_index"] = Annotated[AnswerIndex, typer.Option(hidden=True)]
    command.__doc__ = (f"{title}, {default_shots}-shot by default.\n\nExample: medtrain eval {task} --model "
                       f"runs/sft/export --data data/{task} --out results/{task}")
    eval_app.command(task)(command)


_mc_command("mmlu", "MMLU", "dev/ and test/ (headerless CSVs)")
_mc_command("cmmlu", "CMMLU", "dev/ and test/ (CSVs with a header)")
_mc_command("medqa", "MedQA (USMLE, 4 or 5 options)", "test.jsonl (official {question, options, answer_idx} or the "
            "GBaker copy's {sent1, ending0..3, label}) and dev.jsonl for --shots", default_shots=0)
_mc_command("medmcqa", "MedMCQA", "test.jsonl ({question, opa..opd, cop}; cop from 0 or 1, read from the file) and "
            "dev.jsonl for --shots", default_shots=0)


@app.command()
def report(paths: Annotated[list[Path], typer.Argument(help="Training runs, sweep dirs and/or eval outputs.")],
           out: Annotated[Path, typer.Option(help="Directory for report.md and loss_curve.png.")] = Path("report"),
           overwrite: ReplaceOpt = False,
           paper: Annotated[bool, typer.Option("--paper", help="Print the paper's Tables 2-4 beside the cells that "
                                               "match them, with the difference and both sides' conventions.")]
           = False) -> None:
    """report.md with paper-style tables and the loss curve (Figure 1).

    Example: medtrain report runs/continual runs/sweep --out report --paper
    """
    from medtrain.reporting import build_report

    with user_errors(out):
        refuse_existing(out, overwrite)
        path = build_report(paths, out, paper=paper)
    typer.echo(f"wrote {path}")


@app.command()
def tokenizer(input: Annotated[list[Path], typer.Option("--input", help="Text/CSV/JSONL files (repeatable).")],
              out: Annotated[Path, typer.Option(help="Tokenizer directory to write.")],
              vocab_size: Annotated[int, typer.Option(help="Vocabulary size.")] = 2000,
              overwrite: ReplaceOpt = False) -> None:
    """Train a small byte-level BPE tokenizer locally (for tiny models; real runs use the model's own).

    Example: medtrain tokenizer --input corpus.jsonl --out tok --vocab-size 2000
    """
    from medtrain.data_prep.format import DatasetError
    from medtrain.data_prep.tokenizer import tokenizer_corpus, train_bpe_tokenizer

    with user_errors(out):
        missing = [str(p) for p in input if not p.is_file()]
        if missing:
            raise DatasetError(f"no such input file(s): {', '.join(missing)}")
        refuse_existing(out, overwrite)
        texts = tokenizer_corpus(input)
        typer.echo(f"training a {vocab_size}-token BPE tokenizer on {len(texts):,} lines ...", err=True)
        train_bpe_tokenizer(texts, out, vocab_size=vocab_size)
    typer.echo(f"wrote {out} (vocab {vocab_size}, trained on {len(texts):,} lines)")


@app.command("init-model")
def init_model(config: Annotated[str, typer.Option(help="Named shape (tiny, tiny-wide, llama-1b, ...).")],
               tokenizer: Annotated[Path, typer.Option(help="Tokenizer directory (vocab size, special ids).")],
               out: Annotated[Path, typer.Option(help="Hugging Face directory to write.")],
               seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
               overwrite: ReplaceOpt = False) -> None:
    """A randomly initialised Llama of a named shape, as a Hugging Face directory.

    Example: medtrain init-model --config tiny --tokenizer tok --out models/base
    """
    from medtrain.model_dir import init_model_dir

    with user_errors(out):
        refuse_existing(out, overwrite)
        path = init_model_dir(config, tokenizer, out, seed)
    typer.echo(f"wrote {path}")


@app.command()
def sweep(
    continual: Annotated[Path, typer.Option(help="Continual-pretraining run directory (with checkpoints/).")],
    sft_recipe: Annotated[Path, typer.Option(help="SFT recipe; model/output_dir are set per cell.")],
    checkpoints: Annotated[str, typer.Option(help="Comma-separated steps (0 = the base model), or 'all'.")],
    hosts: HostsOpt,
    out: Annotated[Path, typer.Option(help="Sweep directory (one subdirectory per cell).")],
    cmexam_data: Annotated[Path, typer.Option(help="CMExam test CSV.")],
    mmlu_data: Annotated[Path, typer.Option(help="MMLU folder (dev/, test/).")],
    cmmlu_data: Annotated[Path, typer.Option(help="CMMLU folder (dev/, test/).")],
    launcher: Annotated[str, typer.Option(help="pdsh | slurm | openmpi | local.")] = "pdsh",
    limit: LimitOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="CMExam generation length.")] = 256,
    eval_across_hosts: Annotated[bool, typer.Option("--eval-across-hosts", help="Spread every eval over the "
                                                    "ranks of --hosts (results equal a single process's).")]
    = False,
    set_: OverrideOpt = None,
) -> None:
    """Table 3: fine-tune from each continual checkpoint and evaluate; resumes a partly done sweep.

    Example: medtrain sweep --continual runs/continual --sft-recipe recipes/paper/sft_cmexam_reasoning.yaml
    --checkpoints 0,750,1500,2250,3000 --hosts hostfiles/v100x20 --out runs/sweep --cmexam-data test.csv
    --mmlu-data data/mmlu --cmmlu-data data/cmmlu
    """
    from medtrain.sweep import EvalData, sweep_steps
    from medtrain.sweep import sweep as run_sweep

    with user_errors(out):
        summary = run_sweep(continual, sft_recipe, sweep_steps(checkpoints, continual), hosts, out,
                            EvalData(cmexam_data, mmlu_data, cmmlu_data, limit=limit, max_new_tokens=max_new_tokens,
                                     across=(hosts, launcher) if eval_across_hosts else None),
                            launcher=launcher, overrides=set_ or [])
    typer.echo((out / "table3.md").read_text())
    typer.echo(f"wrote {out / 'table3.md'} ({len(summary['rows'])} rows)")


@recipes_app.callback()
def recipes_list(ctx: typer.Context) -> None:
    """The recipes shipped with medtrain, by the name --recipe takes, with their first comment line.

    Example: medtrain recipes; medtrain recipes cp paper/continual_llama2_13b my_continual.yaml
    """
    if ctx.invoked_subcommand is not None:
        return
    from medtrain.core.recipe import builtin_recipes

    for name, path in builtin_recipes().items():
        about = next((line.lstrip("# ").strip() for line in path.read_text(encoding="utf-8").splitlines()
                      if line.startswith("#") and "medtrain " not in line), "")
        typer.echo(f"{name:<32} {about}")


@recipes_app.command("cp")
def recipes_cp(name: Annotated[str, typer.Argument(help="A built-in recipe's name (`medtrain recipes`).")],
               dest: Annotated[Path, typer.Argument(help="Where to write the copy (a file or a directory).")],
               overwrite: ReplaceOpt = False) -> None:
    """Copy a built-in recipe out to edit, as torchtune's `tune cp`. Example: medtrain recipes cp
    paper/sft_cmexam_reasoning my_sft.yaml"""
    from medtrain.core.publish import publish_text
    from medtrain.core.recipe import builtin_recipe, builtin_recipes

    with user_errors():
        source = builtin_recipe(name)
        if source is None:
            raise ConfigError(f"no built-in recipe '{name}'; `medtrain recipes` lists: {', '.join(builtin_recipes())}")
        target = dest / source.name if dest.is_dir() else dest
        refuse_existing(target, overwrite, what="file")
        publish_text(target, source.read_text(encoding="utf-8"))
    typer.echo(f"wrote {target} (from {name}); use it with --recipe {target}")


@app.command()
def demo(workdir: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path("demo_work"),
         quick: Annotated[bool, typer.Option("--quick", help="Smallest setting (CI): fewer steps and questions.")]
         = False) -> None:
    """The whole pipeline at toy scale on CPU, on shipped data. Example: medtrain demo --workdir demo_work"""
    from medtrain.demo import run_demo

    with user_errors(workdir):
        run_demo(workdir, "quick" if quick else "full")


def _module_entry() -> None:
    """`python -m medtrain ...` (what the deepspeed launcher starts on each rank)."""
    app(prog_name="medtrain")
