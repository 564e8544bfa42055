"""`medtrain train continual|sft` (what the launcher starts on each rank), `medtrain export`, `medtrain
init-model`: the commands that load torch. Their library modules are imported inside each command, on purpose:
torch and transformers cost seconds, and `medtrain --help`, `plan` or `launch` need neither."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medtrain.cli.common import RecipeOpt, ReplaceOpt, user_errors
from medtrain.core.publish import refuse_existing

train_app = typer.Typer(help="Per-rank training entry points (what `medtrain launch` starts).", no_args_is_help=True)

RunSpecOpt = Annotated[Path | None, typer.Option("--run-spec", help="run_spec.json (launch writes one; without "
                                                "it the rank computes the same from the recipe).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest complete checkpoint.")]


@train_app.command("continual")
def train_continual(recipe: RecipeOpt, run_spec: RunSpecOpt = None, resume: ResumeOpt = False) -> None:
    """Continual pretraining on one rank of a DeepSpeed job.

    Example (under the launcher): deepspeed --num_gpus 2 --module medtrain train continual --recipe R
    """
    from medtrain.train.trainer import train_on_rank

    train_on_rank(recipe, "continual", run_spec, resume)


@train_app.command("sft")
def train_sft(recipe: RecipeOpt, run_spec: RunSpecOpt = None, resume: ResumeOpt = False) -> None:
    """Supervised fine-tuning (prompt masked from the loss) on one rank of a DeepSpeed job.

    Example (under the launcher): deepspeed --num_gpus 2 --module medtrain train sft --recipe R
    """
    from medtrain.train.trainer import train_on_rank

    train_on_rank(recipe, "sft", run_spec, resume)


def export(checkpoint: Annotated[Path, typer.Option(help="A checkpoint dir, or a run dir (newest checkpoint).")],
           out: Annotated[Path, typer.Option(help="Hugging Face model directory to write.")],
           overwrite: ReplaceOpt = False) -> None:
    """ZeRO-3 shards -> Hugging Face directory (safetensors, config, tokenizer, lineage).

    Example: medtrain export --checkpoint runs/continual/checkpoints/step_000750 --out models/continual-750
    """
    from medtrain.train.export import export_checkpoint

    with user_errors(out):
        refuse_existing(out, overwrite)
        path = export_checkpoint(checkpoint, out)
    typer.echo(f"wrote {path}")


def init_model(config: Annotated[str, typer.Option(help="Named shape (tiny, tiny-wide, llama-1b, ...).")],
               tokenizer: Annotated[Path, typer.Option(help="Tokenizer directory (vocab size, special ids).")],
               out: Annotated[Path, typer.Option(help="Hugging Face directory to write.")],
               seed: Annotated[int, typer.Option(help="Initialisation seed.")] = 0,
               overwrite: ReplaceOpt = False) -> None:
    """A randomly initialised Llama of a named shape, as a Hugging Face directory.

    Example: medtrain init-model --config tiny --tokenizer tok --out models/base
    """
    from medtrain.train.model_dir import init_model_dir

    with user_errors(out):
        refuse_existing(out, overwrite)
        path = init_model_dir(config, tokenizer, out, seed)
    typer.echo(f"wrote {path}")
