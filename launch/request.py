"""What `medtrain launch` asks for, as one value, and the one function that carries it out: a dry run, a
preflight (`--check`), or a started job watched to its end. The CLI parses flags into a LaunchRequest and
prints what this returns; the sweep builds its own requests through prepare_launch."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.launch.console import recorded, write_preamble
from medtrain.launch.host_checks import expectations
from medtrain.launch.preflight import run_preflight
from medtrain.launch.run import PreparedLaunch, prepare_launch, start
from medtrain.launch.slurm import SlurmOptions

PAPER_CONTINUAL = "paper/continual_llama2_13b"
"""The recipe `plan` and `launch` take when none is named: the paper's continual pretraining."""

STOPPED_BY_SIGNAL = frozenset(128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1))
"""Exit codes of a run stopped on purpose; the supervisor has already said how to resume it."""


@dataclass
class LaunchRequest:
    recipe: str
    hosts: Path | None = None
    launcher: str = "pdsh"
    dry_run: bool = False
    check: bool = False
    resume: bool = False
    overwrite: bool = False
    check_timeout: float = 120.0
    env: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    """Typed recipe values from the launch's own flags (tokenizer, hang_timeout, max_restarts); None: not given."""
    spare_hosts: Path | None = None
    allow_shrink: bool = False
    nodes: int = 0
    gpus_per_node: int = 0
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    detach: bool = False
    ds_config: Path | None = None
    """A user's DeepSpeed JSON (`config deepspeed`, edited), checked against the recipe and run as it is."""


def launch(request: LaunchRequest, say: Callable[[str], None] = print) -> int:
    """Carry out a launch request; returns the exit code `medtrain launch` ends with (0 for a dry run, a finished
    run or a passed preflight)."""
    r = request
    with recorded() as said:
        prepared = prepare_launch(r.recipe, r.hosts, r.launcher, overrides=r.overrides, env=r.env, resume=r.resume,
                                  dry_run=r.dry_run or r.check, check=r.check, slurm=r.slurm, nodes=r.nodes,
                                  gpus_per_node=r.gpus_per_node, overwrite=r.overwrite, settings=r.settings,
                                  ds_config=r.ds_config)
    if prepared.finished:
        say(f"medtrain: {prepared.finished}")
        return 0
    if r.dry_run:
        say(prepared.describe())
        return 0
    if r.check:
        return preflight(prepared, r.check_timeout, say)
    say(prepared.describe())
    write_preamble(prepared.spec.run_dir, [*said, prepared.describe()])
    return start(prepared, resume=r.resume, spare_hosts=r.spare_hosts, allow_shrink=r.allow_shrink,
                 detach=r.detach)


def preflight(prepared: PreparedLaunch, timeout: float, say: Callable[[str], None] = print) -> int:
    """`--check`: every host reached, its versions and inputs compared, one all-reduce; 0 when all pass."""
    plan = prepared.plan
    say(f"weights: {plan.recipe.weights}\nchecking on every host: data, tokenizer"
        f"{'' if plan.recipe.init == 'random' else ', model'} and {plan.disk_bytes / 2**30:.2f} GiB of room "
        f"in {prepared.spec.run_dir}")
    report = run_preflight(prepared.spec, timeout=timeout, slurm=prepared.slurm,
                           expect=expectations(plan.recipe, plan.disk_bytes))
    say(report.render())
    return 0 if report.ok else 1
