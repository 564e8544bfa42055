"""From `medtrain launch` options to a started job: validate everything, write the run's files, start.

Everything that can be wrong (hostfile, world size, batch arithmetic, recipe, data, launcher) is found here,
before any process starts on any node.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from core.ds_config import write_ds_config
from core.publish import publish_text
from core.recipe import RecipeError, dump_recipe, load_recipe
from launch.hostfile import read_hostfile
from launch.launcher import (
    LaunchError,
    LaunchSpec,
    build_command,
    free_port,
    render_plan,
    render_sbatch,
    validate,
    write_env_file,
)
from launch.plan import Plan, make_plan


@dataclass
class PreparedLaunch:
    spec: LaunchSpec
    plan: Plan
    command: list[str]
    dry_run: bool

    def describe(self) -> str:
        p = self.plan
        head = (f"plan: {p.total_steps} steps, global batch {p.spec.batch_equation()}; "
                f"{'FITS' if p.fits else 'DOES NOT FIT'} ({p.total_bytes / 2**30:.1f} GiB per GPU, "
                f"see `medtrain plan`)")
        tail = "dry run: nothing started" if self.dry_run else f"run dir: {self.spec.run_dir}"
        head += f"\nweights: {p.recipe.weights}"
        return "\n".join([head, render_plan(self.spec, self.command), tail])


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise LaunchError(f"--env '{item}' must look like KEY=VALUE")
        env[key] = value
    return env


def prepare_launch(recipe_path: Path, hosts: Path, launcher: str, *, overrides: list[str], env: list[str],
                   resume: bool, dry_run: bool, entry: list[str] | None = None,
                   check: bool = False) -> PreparedLaunch:
    recipe = load_recipe(recipe_path, overrides)
    pool = read_hostfile(hosts)
    plan = make_plan(recipe, pool)
    if not dry_run or check:
        if not plan.fits:
            raise RecipeError(f"{recipe.source}: DOES NOT FIT ({plan.total_bytes / 2**30:.1f} GiB per GPU of "
                              f"{plan.gpu_bytes / 2**30:.1f}); see `medtrain plan` for the components, then lower "
                              "micro_batch or seq_len, or add hosts")
        recipe.check_trainable()
        if not (Path(recipe.data) / "manifest.json").is_file():
            raise RecipeError(f"{recipe.source}: data '{recipe.data}' is not a prepared dataset; run `medtrain prep` "
                              "first")
        from data_prep.format import TokenDataset
        from data_prep.tokenizer import tokenizer_identity

        TokenDataset(recipe.data, expect_tokenizer=tokenizer_identity(recipe.tokenizer_dir))  # before any rank
    run_dir = Path(recipe.output_dir).resolve()
    if entry is None:
        entry = ["--module", "--no_local_rank", "medtrain", "train", recipe.stage,
                 "--recipe", str(run_dir / "recipe.yaml"), "--run-spec", str(run_dir / "run_spec.json")]
        if resume:
            entry.append("--resume")
    spec = LaunchSpec(pool=pool, hostfile=Path(hosts), launcher=launcher, entry=entry, run_dir=run_dir,
                      master_port=free_port(), env=parse_env(env))
    validate(spec, dry_run=dry_run)
    command = build_command(spec)
    prepared = PreparedLaunch(spec, plan, command, dry_run)
    if not dry_run:
        write_run_files(prepared)
    return prepared


def write_run_files(prepared: PreparedLaunch) -> None:
    """The recipe and run spec every rank reads (the DeepSpeed JSON beside them for people and peers' tools),
    and the env file remote ranks get (shared filesystem)."""
    spec = prepared.spec
    publish_text(spec.run_dir / "recipe.yaml", dump_recipe(prepared.plan.recipe))
    prepared.plan.spec.write(spec.run_dir / "run_spec.json")
    write_ds_config(prepared.plan.spec.ds_config, spec.run_dir / "ds_config.json")
    write_launcher_files(spec, f"medtrain-{prepared.plan.recipe.stage}")


def write_launcher_files(spec: LaunchSpec, job_name: str) -> None:
    """What the launcher itself reads: the env file remote ranks get, and the sbatch script under slurm."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    write_env_file(spec)
    if spec.launcher == "slurm":
        publish_text(spec.run_dir / "launch.sbatch", render_sbatch(spec, job_name))


def start(prepared: PreparedLaunch, resume: bool = False, spare_hosts: Path | None = None,
          allow_shrink: bool = False) -> int:
    """Run the job to its end under the watchdog, restarting it as the recipe allows (slurm: submit the sbatch
    script); return the code `medtrain launch` exits with."""
    if prepared.spec.launcher == "slurm":
        return run_launcher(prepared.spec, prepared.command)
    from launch.supervise import supervise
    from launch.watchdog import Allowances

    recipe = prepared.plan.recipe

    def replan(pool) -> None:
        make_plan(recipe, pool).spec.write(prepared.spec.run_dir / "run_spec.json")

    spares = read_hostfile(spare_hosts) if spare_hosts else None
    return supervise(prepared.spec, allow=Allowances.of(recipe), max_restarts=recipe.max_restarts, resume=resume,
                     replan=replan, spare_hosts=spares, allow_shrink=allow_shrink)


def run_launcher(spec: LaunchSpec, command: list[str]) -> int:
    import subprocess

    from launch.launcher import launch_environment

    cmd = ["sbatch", str(spec.run_dir / "launch.sbatch")] if spec.launcher == "slurm" else command
    sys.stdout.flush()
    return subprocess.run(cmd, env=launch_environment(spec)).returncode


def launch_module(hosts: Path, launcher: str, module: list[str], run_dir: Path, env: list[str] | None = None,
                  job_name: str = "medtrain") -> int:
    """Start `python -m MODULE ARGS` on every rank of a hostfile through the same launcher as training (the
    sharded eval uses it); returns the launcher's exit code."""
    run_dir = Path(run_dir).resolve()
    spec = LaunchSpec(pool=read_hostfile(hosts), hostfile=Path(hosts), launcher=launcher,
                      entry=["--module", "--no_local_rank", *module], run_dir=run_dir, master_port=free_port(),
                      env=parse_env(env or []))
    validate(spec, dry_run=False)
    write_launcher_files(spec, job_name)
    return run_launcher(spec, build_command(spec))

