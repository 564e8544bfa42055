"""`medtrain plan`, `medtrain launch`, `medtrain logs`, `medtrain checkpoints`: a run on the cluster, before,
during and after."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from medtrain.cli.common import HostsOpt, OverrideOpt, user_errors
from medtrain.core.checkpoint_files import listing
from medtrain.core.ds_config import ConfigError
from medtrain.core.recipe import load_recipe
from medtrain.launch.console import copy_log, run_log
from medtrain.launch.hostfile import read_hostfile
from medtrain.launch.plan import Hardware, make_plan
from medtrain.launch.request import PAPER_CONTINUAL, STOPPED_BY_SIGNAL, LaunchRequest, launch
from medtrain.launch.slurm import SlurmOptions
from medtrain.launch.status import read_status, render


def paper_recipe_unless(recipe: str | None) -> str:
    """`plan` and `launch` with no --recipe take the paper's continual run, and say so."""
    if recipe is None:
        typer.echo(f"recipe: {PAPER_CONTINUAL} (the paper's continual pretraining; --recipe to choose another)",
                   err=True)
    return recipe or PAPER_CONTINUAL


PlanRecipeOpt = Annotated[str | None, typer.Option("--recipe", help="Run recipe: a YAML path or a built-in name "
                                                   f"(default: {PAPER_CONTINUAL}, the paper's continual run).")]
GpuMemOpt = Annotated[float, typer.Option(help="Memory per GPU in GB (default: the recipe's preset's: V100 32, "
                                          "A100 40 or 80, H100 80).")]
PeakOpt = Annotated[float, typer.Option(help="Peak TFLOPS per GPU in the training dtype (default: the recipe's "
                                        "peak_tflops, else its preset's: V100 125, A100 312, H100 989).")]
MfuOpt = Annotated[float, typer.Option(help="Assumed model FLOPs utilisation for the time estimate.")]


def plan(hosts: HostsOpt, recipe: PlanRecipeOpt = None, gpu_mem_gb: GpuMemOpt = 0.0, peak_tflops: PeakOpt = 0.0,
         mfu: MfuOpt = 0.25, set_: OverrideOpt = None) -> None:
    """Memory per GPU, steps, tokens and time; exits 2 when it does not fit (a recipe or hostfile to change).

    Example: medtrain plan --recipe paper/continual_llama2_13b --hosts hostfiles/v100x20
    """
    recipe = paper_recipe_unless(recipe)
    with user_errors():
        if not (0 < mfu <= 1):
            raise ConfigError(f"--mfu {mfu} must be in (0, 1]")
        result = make_plan(load_recipe(recipe, set_), read_hostfile(hosts),
                           Hardware(gpu_mem_gb=gpu_mem_gb, peak_tflops=peak_tflops, mfu=mfu))
    typer.echo(result.render())
    if not result.fits:
        raise typer.Exit(code=2)


LaunchHostsOpt = Annotated[Path | None, typer.Option("--hosts", help="Hostfile ('host slots=N' lines); under slurm "
                                                     "optional (--nodes/--gpus-per-node), its names become "
                                                     "--nodelist.")]
LauncherOpt = Annotated[str, typer.Option(help="pdsh | slurm | openmpi | local.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would run, node by node; start nothing.")]
CheckOpt = Annotated[bool, typer.Option("--check", help="Preflight: reach every host, compare versions, all-reduce "
                                        "once.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest complete checkpoint.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds --check waits for every rank.")]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for every rank (repeatable).")]
HangOpt = Annotated[float | None, typer.Option(help="Seconds without a step before the run counts as hung (recipe "
                                               "hang_timeout; 0: no watchdog).")]
RestartsOpt = Annotated[int | None, typer.Option(help="Relaunch a failed or hung run from its newest verified "
                                                 "checkpoint up to N times (recipe max_restarts).")]
SparesOpt = Annotated[Path | None, typer.Option(help="Hostfile of spare hosts: one replaces a host that fails "
                                                "twice.")]
ShrinkOpt = Annotated[bool, typer.Option("--allow-shrink", help="Drop a host that fails twice and go on with fewer "
                                         "ranks, same global batch.")]
NodesOpt = Annotated[int, typer.Option(help="slurm: nodes to allocate.")]
PerNodeOpt = Annotated[int, typer.Option(help="slurm: ranks per node (one per GPU on GPU presets).")]
PartitionOpt = Annotated[str | None, typer.Option(help="slurm: --partition.")]
AccountOpt = Annotated[str | None, typer.Option(help="slurm: --account.")]
TimeLimitOpt = Annotated[str | None, typer.Option("--time", help="slurm: --time (e.g. 12:00:00).")]
TimeWarningOpt = Annotated[int, typer.Option(help="slurm, with --time: seconds before the limit at which every rank "
                                             "saves and stops, and the next job resumes there (0: off).")]
QosOpt = Annotated[str | None, typer.Option(help="slurm: --qos.")]
SbatchArgOpt = Annotated[list[str] | None, typer.Option("--sbatch-arg", help="slurm: one more #SBATCH line, e.g. "
                                                        "--sbatch-arg=--exclusive (repeatable).")]
DsConfigOpt = Annotated[Path | None, typer.Option(
    "--ds-config", help="Your DeepSpeed JSON (`medtrain config deepspeed` output, edited: buckets, offload, "
    "communication) instead of the computed one; checked against the recipe first, one line per conflict; \"auto\" "
    "takes the recipe's value.")]
DetachOpt = Annotated[bool, typer.Option("--detach", help="slurm: submit and return the job id; do not wait.")]
TokenizerOpt = Annotated[str | None, typer.Option(help="Tokenizer directory or Hugging Face id (recipe tokenizer; "
                                                  "default: the model's own).")]
FreshOpt = Annotated[bool, typer.Option("--overwrite", help="Start afresh in an output_dir that holds a run: the old "
                                        "run is moved aside to OUTPUT_DIR.old-TIME, not deleted.")]


def launch_command(recipe: PlanRecipeOpt = None, hosts: LaunchHostsOpt = None, launcher: LauncherOpt = "pdsh",
                   dry_run: DryRunOpt = False, check: CheckOpt = False, resume: ResumeOpt = False,
                   timeout: TimeoutOpt = 120.0, env: EnvOpt = None, hang_timeout: HangOpt = None,
                   max_restarts: RestartsOpt = None, spare_hosts: SparesOpt = None, allow_shrink: ShrinkOpt = False,
                   nodes: NodesOpt = 0, gpus_per_node: PerNodeOpt = 0, partition: PartitionOpt = None,
                   account: AccountOpt = None, time_limit: TimeLimitOpt = None, time_warning: TimeWarningOpt = 300,
                   qos: QosOpt = None, sbatch_arg: SbatchArgOpt = None, detach: DetachOpt = False,
                   tokenizer: TokenizerOpt = None, set_: OverrideOpt = None, overwrite: FreshOpt = False,
                   ds_config: DsConfigOpt = None) -> None:
    """Start the recipe's training on every rank through the real deepspeed launcher, watch it, restart it.

    Example: medtrain launch --hosts hostfiles/v100x20 --recipe paper/continual_llama2_13b --dry-run
    """
    request = LaunchRequest(
        paper_recipe_unless(recipe), hosts, launcher, dry_run, check, resume, overwrite, timeout, list(env or []),
        list(set_ or []), {"tokenizer": tokenizer, "hang_timeout": hang_timeout, "max_restarts": max_restarts},
        spare_hosts, allow_shrink, nodes, gpus_per_node,
        SlurmOptions(partition=partition, account=account, time=time_limit, qos=qos, warn_seconds=time_warning,
                     sbatch_args=list(sbatch_arg or [])), detach, ds_config)
    with user_errors():
        code = launch(request, typer.echo)
    if code != 0:
        if code not in STOPPED_BY_SIGNAL and not check:  # a stop asked for was said by the supervisor
            typer.echo(f"error: training exited with code {code}", err=True)
        raise typer.Exit(code=code if code in (1, 2) or code > 128 else 1)


def logs(run_dir: Annotated[Path, typer.Argument(help="A training run directory.")],
         rank: Annotated[int | None, typer.Option(help="This rank's own output and traceback instead of the "
                                                  "launcher's console.")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what is appended.")] = False,
         ) -> None:
    """The run's console as the user saw it (logs/launch.log), or one rank's output (logs/rankN.log).

    Example: medtrain logs runs/continual_llama2_13b --rank 15
    """
    with user_errors():
        path = run_log(run_dir, rank)
    copy_log(path, sys.stdout.buffer, follow)


def status(run_dir: Annotated[Path, typer.Argument(help="A training run directory.")],
           watch: Annotated[bool, typer.Option("--watch", help="Redraw until the run ends.")] = False,
           every: Annotated[float, typer.Option(help="Seconds between redraws with --watch.")] = 5.0) -> None:
    """Where a run stands: state, step and ETA, loss and validation loss, tokens/s and MFU, restarts and their
    causes, the newest verified checkpoint, each rank's heartbeat, a detached Slurm job's state. Exit code: 0
    finished, 1 failed, 3 running or queued, 4 stopped (resumable), 5 not started.

    Example: medtrain status runs/continual_llama2_13b --watch
    """
    with user_errors():
        found = read_status(run_dir)
    if watch:
        with Live(render(found), refresh_per_second=1, transient=False) as live:
            while found.state in ("running", "queued"):
                time.sleep(every)
                found = read_status(run_dir)
                live.update(render(found))
    else:
        typer.echo(render(found))
    raise typer.Exit(code=found.exit_code)


def checkpoints(run_dir: Annotated[Path, typer.Argument(help="A training run directory (or its checkpoints/).")],
                quick: Annotated[bool, typer.Option("--quick", help="Sizes only; skip reading the bytes back.")]
                = False) -> None:
    """List a run's checkpoints with step, size and state, verified against their manifests, and say which one
    `--resume` would pick.

    Example: medtrain checkpoints runs/continual_llama2_13b
    """
    lines = listing(run_dir, deep=not quick)
    if not lines:
        typer.echo(f"{run_dir}: no checkpoints")
        raise typer.Exit(code=1)
    typer.echo("\n".join(lines))
