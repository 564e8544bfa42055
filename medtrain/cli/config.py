"""`medtrain config deepspeed`, `medtrain hostfile`, `medtrain recipes`: the files a run is configured by."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtrain.cli.common import ReplaceOpt, user_errors
from medtrain.core.ds_config import PRESETS, ConfigError, describe_ds_config, precision_warning, write_ds_config
from medtrain.core.publish import publish_text, refuse_existing
from medtrain.core.recipe import builtin_recipe, builtin_recipes, recipe_summary
from medtrain.launch.hostfile import render_hostfile, write_hostfile
from medtrain.launch.plan import deepspeed_config_for

config_app = typer.Typer(help="Write configuration files.", no_args_is_help=True)
recipes_app = typer.Typer(help="The built-in recipes: list them, copy one out to edit.", invoke_without_command=True)


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
    with user_errors(out):
        refuse_existing(out, overwrite, what="file")
        config = deepspeed_config_for(preset, recipe, hosts)
        write_ds_config(config, out)
    precision, summary = describe_ds_config(config)
    said = precision_warning(preset, precision)
    if said:
        typer.echo(f"warning: {said}", err=True)
    typer.echo(f"wrote {out}: {summary}")


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


@recipes_app.callback()
def recipes_list(ctx: typer.Context) -> None:
    """The recipes shipped with medtrain, by the name --recipe takes, with their first comment line.

    Example: medtrain recipes; medtrain recipes cp paper/continual_llama2_13b my_continual.yaml
    """
    if ctx.invoked_subcommand is not None:
        return
    for name, path in builtin_recipes().items():
        typer.echo(f"{name:<32} {recipe_summary(path)}")


@recipes_app.command("cp")
def recipes_cp(name: Annotated[str, typer.Argument(help="A built-in recipe's name (`medtrain recipes`).")],
               dest: Annotated[Path, typer.Argument(help="Where to write the copy (a file or a directory).")],
               overwrite: ReplaceOpt = False) -> None:
    """Copy a built-in recipe out to edit, as torchtune's `tune cp`. Example: medtrain recipes cp
    paper/sft_cmexam_reasoning my_sft.yaml"""
    with user_errors():
        source = builtin_recipe(name)
        if source is None:
            raise ConfigError(f"no built-in recipe '{name}'; `medtrain recipes` lists: {', '.join(builtin_recipes())}")
        target = dest / source.name if dest.is_dir() else dest
        refuse_existing(target, overwrite, what="file")
        publish_text(target, source.read_text(encoding="utf-8"))
    typer.echo(f"wrote {target} (from {name}); use it with --recipe {target}")
