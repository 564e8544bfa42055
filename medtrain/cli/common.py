"""What every command group shares: the one place exceptions become exit codes, and the options several
commands take with the same meaning."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from medtrain.core.disk import disk_full_error, is_disk_full
from medtrain.core.errors import RunFailed, UserError


@contextmanager
def user_errors(out: Path | None = None) -> Iterator[None]:
    """The one place the CLI turns exceptions into exit codes: a UserError (exit 2) or a failed run (exit 1) is
    one line on stderr; a full disk while writing `out` is a UserError too (the writers have removed their
    staging); anything else is a bug and keeps its traceback."""
    try:
        yield
    except (UserError, RunFailed) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=e.exit_code) from None
    except Exception as e:
        if not is_disk_full(e):
            raise
        typer.echo(f"error: {disk_full_error(Path(out or getattr(e, 'filename', None) or '.'))}", err=True)
        raise typer.Exit(code=2) from None


def say(text: str) -> None:
    """What a library function tells the user about its choices goes to stderr, beside the command's result."""
    typer.echo(text, err=True)


class AnswerIndex(StrEnum):
    auto = "auto"
    zero = "0"
    one = "1"

    def base(self) -> int | None:
        return None if self is AnswerIndex.auto else int(self.value)


ReplaceOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
RecipeOpt = Annotated[str, typer.Option("--recipe", help="Run recipe: a YAML path or a built-in name such as "
                                        "paper/continual_llama2_13b (`medtrain recipes` lists them).")]
HostsOpt = Annotated[Path, typer.Option("--hosts", help="Hostfile ('host slots=N' lines).")]
OverrideOpt = Annotated[list[str] | None, typer.Option("--set", help="Recipe override key=value (repeatable).")]
LimitOpt = Annotated[int | None, typer.Option(help="Only the first N questions (per subject for MMLU/CMMLU).")]
AnswerIndexOpt = Annotated[AnswerIndex, typer.Option(
    help="What the answer index counts from: 1 (MedMCQA's official release), 0 (its Hugging Face copy), or auto "
         "(read from the values in the files; all 1-3 is ambiguous and refused).")]
