"""The `medtrain` command: one module per command group, each command parsing its options and calling one
library function. Exit codes: 0 ok, 2 a user error, 1 a failed run (cli.common.user_errors)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from typer.core import TyperOption

from medtrain.cli import config, contamination, experiments, launch, prep, train
from medtrain.cli import eval as eval_commands
from medtrain.core.log import setup_logging
from medtrain.core.provenance import untested_versions, versions

app = typer.Typer(help="Continual pretraining, SFT and evaluation of Llama-2 for medical QA on DeepSpeed ZeRO-3.",
                  pretty_exceptions_show_locals=False, no_args_is_help=True)


def _switches_show_no_type() -> None:
    """Typer puts `<bool>` in the type column of every switch, --help and --install-completion included, where it
    says nothing (a switch takes no value): the column stays for options that do take one."""
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None:  # Typer before 0.29 (the GPU image has 0.28) prints no type column: nothing to hide
        return

    def display_type_rich(self: TyperOption, ctx) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_switches_show_no_type()


def _version(value: bool) -> None:
    if value:
        v = versions()
        typer.echo(f"medtrain {v['medtrain']} (commit {v['commit']}; torch {v['torch']}, deepspeed {v['deepspeed']}, "
                   f"transformers {v['transformers']})")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print medtrain's version and its key dependencies'.")] = False
         ) -> None:
    """Continual pretraining, SFT and evaluation of Llama-2 for medical QA on DeepSpeed ZeRO-3."""
    setup_logging()
    old = untested_versions() if os.environ.get("RANK", "0") == "0" else []  # once per job, not per rank
    if old:
        typer.echo(f"warning: untested versions: {'; '.join(old)}; medtrain is tested with the bounds in its "
                   "pyproject.toml", err=True)


app.add_typer(config.config_app, name="config")
app.add_typer(eval_commands.eval_app, name="eval")
app.add_typer(train.train_app, name="train")
app.add_typer(prep.prep_app, name="prep")
app.add_typer(config.recipes_app, name="recipes")
app.command()(config.hostfile)
app.command()(launch.plan)
app.command("launch")(launch.launch_command)
app.command()(launch.logs)
app.command()(launch.checkpoints)
app.command()(launch.status)
app.command()(train.export)
app.command("init-model")(train.init_model)
app.command()(prep.tokenizer)
app.command()(experiments.report)
app.command()(experiments.sweep)
app.command()(experiments.demo)
app.command()(contamination.contamination)


def _module_entry() -> None:
    """`python -m medtrain ...` (what the deepspeed launcher starts on each rank)."""
    app(prog_name="medtrain")
