"""`medtrain sweep`, `medtrain report`, `medtrain demo`: the orchestrators over training and eval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtrain.cli.common import HostsOpt, LimitOpt, OverrideOpt, ReplaceOpt, user_errors
from medtrain.core.publish import refuse_existing
from medtrain.experiments.demo import run_demo
from medtrain.experiments.reporting import build_report
from medtrain.experiments.sweep import EvalData, sweep_steps
from medtrain.experiments.sweep import sweep as run_sweep


def report(paths: Annotated[list[Path], typer.Argument(help="Training runs, sweep dirs and/or eval outputs.")],
           out: Annotated[Path, typer.Option(help="Directory for report.md and loss_curve.png.")] = Path("report"),
           overwrite: ReplaceOpt = False,
           paper: Annotated[bool, typer.Option("--paper", help="Print the paper's Tables 2-4 beside the cells that "
                                               "match them, with the difference and both sides' conventions.")]
           = False) -> None:
    """report.md with paper-style tables and the loss curve (Figure 1).

    Example: medtrain report runs/continual runs/sweep --out report --paper
    """
    with user_errors(out):
        refuse_existing(out, overwrite)
        path = build_report(paths, out, paper=paper)
    typer.echo(f"wrote {path}")


ContinualOpt = Annotated[Path, typer.Option(help="Continual-pretraining run directory (with checkpoints/).")]
SftRecipeOpt = Annotated[Path, typer.Option(help="SFT recipe; model/output_dir are set per cell.")]
StepsOpt = Annotated[str, typer.Option(help="Comma-separated steps (0 = the base model), or 'all'.")]
SweepOutOpt = Annotated[Path, typer.Option(help="Sweep directory (one subdirectory per cell).")]
AcrossOpt = Annotated[bool, typer.Option("--eval-across-hosts", help="Spread every eval over the ranks of --hosts "
                                         "(results equal a single process's).")]


def sweep(continual: ContinualOpt, sft_recipe: SftRecipeOpt, checkpoints: StepsOpt, hosts: HostsOpt,
          out: SweepOutOpt, cmexam_data: Annotated[Path, typer.Option(help="CMExam test CSV.")],
          mmlu_data: Annotated[Path, typer.Option(help="MMLU folder (dev/, test/).")],
          cmmlu_data: Annotated[Path, typer.Option(help="CMMLU folder (dev/, test/).")],
          launcher: Annotated[str, typer.Option(help="pdsh | slurm | openmpi | local.")] = "pdsh",
          limit: LimitOpt = None,
          max_new_tokens: Annotated[int, typer.Option(help="CMExam generation length.")] = 256,
          eval_across_hosts: AcrossOpt = False, set_: OverrideOpt = None,
          contamination: Annotated[bool, typer.Option(
              "--contamination", help="Check the continual and SFT data for the benchmarks' questions once "
              "(`medtrain contamination`) and add each cell's clean-subset numbers (table3_clean.md).")] = False
          ) -> None:
    """Table 3: fine-tune from each continual checkpoint and evaluate; resumes a partly done sweep.

    Example: medtrain sweep --continual runs/continual --sft-recipe recipes/paper/sft_cmexam_reasoning.yaml
    --checkpoints 0,750,1500,2250,3000 --hosts hostfiles/v100x20 --out runs/sweep --cmexam-data test.csv
    --mmlu-data data/mmlu --cmmlu-data data/cmmlu
    """
    with user_errors(out):
        summary = run_sweep(continual, sft_recipe, sweep_steps(checkpoints, continual), hosts, out,
                            EvalData(cmexam_data, mmlu_data, cmmlu_data, limit=limit, max_new_tokens=max_new_tokens,
                                     across=(hosts, launcher) if eval_across_hosts else None),
                            launcher=launcher, overrides=set_ or [], contamination=contamination)
    typer.echo((out / "table3.md").read_text())
    if contamination:
        typer.echo(f"clean subsets (without {summary['contamination']}):\n{(out / 'table3_clean.md').read_text()}")
    typer.echo(f"wrote {out / 'table3.md'} ({len(summary['rows'])} rows)")


def demo(workdir: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path("demo_work"),
         quick: Annotated[bool, typer.Option("--quick", help="Smallest setting (CI): fewer steps and questions.")]
         = False) -> None:
    """The whole pipeline at toy scale on CPU, on shipped data. Example: medtrain demo --workdir demo_work"""
    with user_errors(workdir):
        run_demo(workdir, "quick" if quick else "full")
