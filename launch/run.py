"""From `medtrain launch` options to a started job: validate everything, write the run's files, start.

Everything that can be wrong (hostfile, world size, batch arithmetic, recipe, data, launcher) is found here,
before any process starts on any node.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from medtrain.core import hub
from medtrain.core.ds_config import (
    PRESETS,
    ConfigError,
    ds_config_conflicts,
    merge_ds_config,
    read_ds_config,
    write_ds_config,
)
from medtrain.core.log import get_logger
from medtrain.core.model_files import verify_model_dir
from medtrain.core.provenance import missing_requirements_problem
from medtrain.core.publish import publish_text
from medtrain.core.recipe import AUTO_VAL, RecipeError, dump_recipe, load_recipe
from medtrain.data_prep.format import TokenDataset
from medtrain.data_prep.tokenizer import tokenizer_identity
from medtrain.launch.hostfile import read_hostfile
from medtrain.launch.launcher import (
    LaunchError,
    LaunchSpec,
    build_command,
    free_port,
    launch_environment,
    render_nodes,
    validate,
    write_env_file,
)
from medtrain.launch.plan import Plan, make_plan
from medtrain.launch.run_lock import RunLock, refuse_if_held
from medtrain.launch.slurm import SlurmJob, SlurmOptions, render_sbatch
from medtrain.launch.supervise import supervise, watched
from medtrain.launch.watchdog import Allowances

log = get_logger(__name__)


@dataclass
class PreparedLaunch:
    spec: LaunchSpec
    plan: Plan
    command: list[str]
    dry_run: bool
    slurm: SlurmOptions | None = None
    lock: RunLock | None = None
    """Held from before the run's files are written until start() has seen the job end."""
    finished: str = ""
    """Set when --resume finds the run already complete: what to say instead of starting anything."""
    user_ds_config: dict | None = None
    """`--ds-config`: the user's DeepSpeed JSON, kept to merge into a replanned spec (a shrunk run)."""

    def describe(self) -> str:
        p = self.plan
        head = (f"plan: {p.total_steps} steps, global batch {p.spec.batch_equation()}; "
                f"{'FITS' if p.fits else 'DOES NOT FIT'} ({p.total_bytes / 2**30:.1f} GiB per GPU, "
                f"see `medtrain plan`)")
        tail = "dry run: nothing started" if self.dry_run else f"run dir: {self.spec.run_dir}"
        head += f"\nweights: {p.recipe.weights}"
        if packed := p.spec.data.packing_line(p.steps_per_epoch):
            head += f"\npacking documents: {packed}"
        if self.user_ds_config is not None:
            head += "\ndeepspeed: your --ds-config, checked against the recipe (RUN_DIR/ds_config.json is what runs)"
        if self.spec.launcher == "slurm":  # what is submitted is the script: show it

            script = render_sbatch(self.spec, job_name(p.recipe), self.slurm)
            return "\n".join([head, f"sbatch script ({self.spec.run_dir / 'launch.sbatch'}):", script, tail])
        return "\n".join([head, render_nodes(self.spec, self.command), tail])


def job_name(recipe) -> str:
    return f"medtrain-{recipe.stage}"


def slurm_pool(hosts: Path | None, nodes: int, per_node: int) -> tuple[OrderedDict[str, int], bool]:
    """Under Slurm the allocation is the truth: --nodes x --gpus-per-node, or a hostfile's counts (its names
    become --nodelist). Returns the pool and whether its names are real."""
    if hosts is not None:
        pool = read_hostfile(hosts)
        # "localhost" means "this machine", not a Slurm node name: its count is used, no --nodelist
        return pool, not set(pool) <= {"localhost", "127.0.0.1"}
    if nodes <= 0 or per_node <= 0:
        raise LaunchError("--launcher slurm needs --nodes N --gpus-per-node G (ranks per node), or --hosts FILE")
    return OrderedDict((f"node{i}", per_node) for i in range(nodes)), False


def _pool(recipe, hosts: Path | None, launcher: str, slurm: SlurmOptions | None, nodes: int,
          gpus_per_node: int) -> tuple[OrderedDict[str, int], SlurmOptions | None]:
    """The hosts and slots to run on, and under Slurm the options that follow from the recipe's preset."""
    if launcher != "slurm":
        if hosts is None:
            raise LaunchError(f"--launcher {launcher} needs --hosts FILE (a hostfile: 'host slots=N' lines)")
        return read_hostfile(hosts), slurm
    pool, named = slurm_pool(hosts, nodes, gpus_per_node)
    slurm = slurm or SlurmOptions()
    slurm.nodelist = named
    slurm.gpus = PRESETS[recipe.preset].gpu if recipe.preset in PRESETS else True
    slurm.validate()
    return pool, slurm


def _train_entry(recipe, run_dir: Path, resume: bool) -> list[str]:
    """What the launcher starts on every rank: `medtrain train STAGE` on the run's own recipe and spec."""
    entry = ["--module", "--no_local_rank", "medtrain", "train", recipe.stage,
             "--recipe", str(run_dir / "recipe.yaml"), "--run-spec", str(run_dir / "run_spec.json")]
    return [*entry, "--resume"] if resume else entry


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise LaunchError(f"--env '{item}' must look like KEY=VALUE")
        env[key] = value
    return env


def prepare_launch(recipe_path: Path, hosts: Path | None, launcher: str, *, overrides: list[str], env: list[str],
                   resume: bool, dry_run: bool, entry: list[str] | None = None,
                   check: bool = False, slurm: SlurmOptions | None = None, nodes: int = 0,
                   gpus_per_node: int = 0, overwrite: bool = False, settings: dict | None = None,
                   ds_config: Path | None = None) -> PreparedLaunch:
    """Everything a launch needs, checked, and the run's files written (not on a dry run); `settings` are typed
    recipe values (the launch's own flags), applied after the `key=value` overrides; `ds_config` a user's
    DeepSpeed JSON, checked against the recipe and run in place of the computed one."""
    recipe = load_recipe(recipe_path, overrides, settings)
    pool, slurm = _pool(recipe, hosts, launcher, slurm, nodes, gpus_per_node)
    plan = make_plan(recipe, pool)
    user = read_ds_config(ds_config) if ds_config else None
    if user is not None:
        plan = with_user_ds_config(plan, user, ds_config)
    if not plan.fits:
        raise RecipeError(f"{recipe.source}: DOES NOT FIT ({plan.total_bytes / 2**30:.1f} GiB per GPU of "
                          f"{plan.gpu_bytes / 2**30:.1f}); fits with {plan.advice()} (`medtrain plan` shows the "
                          "components)")
    for said in plan.warnings:
        log.warning(f"warning: {said}")
    run_dir = Path(recipe.output_dir).resolve()
    spec = LaunchSpec(pool=pool, hostfile=Path(hosts or run_dir / "hostfile"), launcher=launcher,
                      entry=entry or _train_entry(recipe, run_dir, resume), run_dir=run_dir,
                      master_port=free_port(), env=parse_env(env))
    validate(spec, dry_run=dry_run)  # the hosts, launcher and env first: they need nothing read or fetched
    missing = missing_requirements_problem()
    if missing and not dry_run:  # here first; every rank checks its own host again before it loads a model
        raise LaunchError(f"this host: {missing}")
    plan = plan.with_recipe(resolve_inputs(recipe, download=not dry_run or check))
    recipe = plan.recipe
    command = build_command(spec)
    prepared = PreparedLaunch(spec, plan, command, dry_run, slurm, user_ds_config=user)
    refuse_if_held(run_dir)
    if resume and not check:
        prepared.finished = finished_run(run_dir, plan.total_steps)
        if prepared.finished:
            return prepared  # before the lock and the run's files: a finished run is left as it is
    earlier = earlier_run(run_dir)
    if earlier and not resume:
        if not overwrite:
            raise LaunchError(f"{run_dir} already holds a run ({earlier}); pass --resume to continue it, --overwrite "
                              f"to move it aside to {aside_name(run_dir)} (nothing is deleted), or set output_dir to "
                              "a new directory")
        if dry_run:
            print(f"dry run: --overwrite would move the earlier run ({earlier}) aside to {aside_name(run_dir)}")
    if dry_run:
        return prepared
    if earlier and not resume:
        aside = aside_name(run_dir)
        run_dir.rename(aside)
        log.info(f"medtrain: moved the earlier run in {run_dir} ({earlier}) aside to {aside}")
    prepared.lock = RunLock(run_dir).acquire()
    try:
        write_run_files(prepared)
    except BaseException:
        prepared.lock.release()
        raise
    return prepared


def resolve_inputs(recipe, download: bool):
    """The recipe with its inputs resolved and checked, the one input check of a dry run, `--check` and a launch,
    before anything differs between them: a model to start from, a prepared dataset, a tokenizer that exists and
    splits text as the data's did, the model's files whole. Hub ids resolve to the snapshot folders every rank
    reads (downloaded unless `download` is off: a dry run names what is not in the cache, and the launch fetches
    it); the validation split is decided. The plan's numbers do not depend on where the inputs live."""
    recipe.check_trainable()
    if not (Path(recipe.data) / "manifest.json").is_file():
        raise RecipeError(f"{recipe.source}: data '{recipe.data}' is not a prepared dataset; run `medtrain prep` "
                          "first")
    recipe = validation_of(recipe)
    recipe = recipe.resolved(download=download, missing_ok=not download)
    if recipe.init != "random" and Path(recipe.model).is_dir():

        verify_model_dir(Path(recipe.model))  # a truncated download is one line here, not a traceback per rank
    if recipe.val_data and not (Path(recipe.val_data) / "manifest.json").is_file():
        raise RecipeError(f"{recipe.source}: val_data '{recipe.val_data}' is not a prepared dataset; prepare the data "
                          "with `medtrain prep ... --val-fraction F` (it writes DATA/val) or set val_data: null")
    tok = Path(recipe.tokenizer_dir)
    if tok.is_dir():

        for data in filter(None, (recipe.data, recipe.val_data)):
            TokenDataset(data, expect_tokenizer=tokenizer_identity(tok))  # before any rank
    elif download or not hub.is_hub_id(recipe.tokenizer_dir):
        raise RecipeError(f"{recipe.source}: tokenizer '{recipe.tokenizer_dir}' does not exist; point tokenizer "
                          "(or model) at the tokenizer directory the data was prepared with")
    else:
        log.info(f"note: '{recipe.tokenizer_dir}' is no directory here nor in the Hugging Face cache; the launch "
                 "downloads it as a hub id and checks that it splits text as the data's tokenizer did")
    return recipe


def finished_run(run_dir: Path, total_steps: int) -> str:
    """What to say when a run has already trained all `total_steps` and exported them ('' when it has not): its
    export's lineage records the step it holds. A recipe that asks for more steps (max_steps) is not finished."""
    try:
        step = json.loads((run_dir / "export" / "lineage.json").read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError):
        return ""
    if not isinstance(step, int) or step < total_steps:
        return ""
    return (f"{run_dir} is already complete: step {step} of {total_steps}, exported to {run_dir / 'export'}; "
            "nothing to resume (raise max_steps or epochs to train further, or --overwrite to start afresh)")


def validation_of(recipe):
    """The recipe with its validation split decided (`val_data: auto` takes the DATA/val that prep held out), said
    in the launch's first lines; eval_every with nothing to validate on is a warning, not silence."""
    auto = recipe.val_data == AUTO_VAL
    recipe = recipe.with_validation()
    if auto and recipe.val_data:
        log.info(f"validation: val_data {recipe.val_data} (the split prep held out; val_data: null to skip)")
    if recipe.eval_every and not recipe.val_data:
        log.warning(f"warning: eval_every {recipe.eval_every} but no validation split: nothing is validated; prepare "
                    "the data with `medtrain prep ... --val-fraction F` (it writes DATA/val) or set val_data")
    return recipe


def earlier_run(run_dir: Path) -> str:
    """What a launch into `run_dir` would write over: its checkpoints and logged steps ('' when none)."""
    found = []
    ckpts = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").is_dir() else []
    if ckpts:
        found.append(f"{len(ckpts)} checkpoint(s), newest {ckpts[-1].name}")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        found.append("metrics.jsonl")
    return ", ".join(found)


def aside_name(run_dir: Path) -> Path:
    return run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")


def with_user_ds_config(plan: Plan, user: dict, path: Path) -> Plan:
    """The plan running the user's DeepSpeed JSON: every conflict with the recipe one line, all at once."""
    conflicts = ds_config_conflicts(user, plan.spec.ds_config, plan.recipe.precision)
    if conflicts:
        raise ConfigError("\n".join(f"{path}: {c}" for c in conflicts))
    return replace(plan, spec=replace(plan.spec, ds_config=merge_ds_config(user, plan.spec.ds_config)))


def write_run_files(prepared: PreparedLaunch) -> None:
    """The recipe and run spec every rank reads (the DeepSpeed JSON beside them for people and peers' tools),
    and the env file remote ranks get (shared filesystem)."""
    spec = prepared.spec
    publish_text(spec.run_dir / "recipe.yaml", dump_recipe(prepared.plan.recipe))
    prepared.plan.spec.write(spec.run_dir / "run_spec.json")
    write_ds_config(prepared.plan.spec.ds_config, spec.run_dir / "ds_config.json")
    write_launcher_files(spec)


def write_launcher_files(spec: LaunchSpec) -> None:
    """What the launcher itself reads: the env file remote ranks get (the sbatch script is written per attempt,
    launch/slurm.py)."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    write_env_file(spec)


def submit_detached(prepared: PreparedLaunch) -> SlurmJob:
    """A job nobody watches: its ranks still beat and log into the run directory (what `status` and `logs` read),
    and with --time it requeues itself at each limit, within the recipe's restart budget, and resumes."""
    recipe = prepared.plan.recipe
    spec = watched(prepared.spec, Allowances.of(recipe))  # each requeue of the job reruns attempt 0
    opts = replace(prepared.slurm or SlurmOptions(), requeue=recipe.max_restarts)
    return SlurmJob(spec, opts, job_name(recipe), launch_environment(spec))


def start(prepared: PreparedLaunch, resume: bool = False, spare_hosts: Path | None = None,
          allow_shrink: bool = False, detach: bool = False) -> int:
    """Run the job to its end under the watchdog, restarting it as the recipe allows (under Slurm each attempt
    is a batch job, waited for and its log streamed; --detach submits one and returns); return the code
    `medtrain launch` exits with."""

    recipe = prepared.plan.recipe

    def replan(pool) -> None:
        spec = make_plan(recipe, pool).spec
        if prepared.user_ds_config is not None:  # the user's settings stay; the batch split is the new world's
            spec = replace(spec, ds_config=merge_ds_config(prepared.user_ds_config, spec.ds_config,
                                                           batch_from_raw=False))
        spec.write(prepared.spec.run_dir / "run_spec.json")

    spares = read_hostfile(spare_hosts) if spare_hosts else None
    starter = None
    lock = prepared.lock or RunLock(prepared.spec.run_dir).acquire()
    try:
        if prepared.spec.launcher == "slurm":

            def starter(spec):
                return SlurmJob(spec, prepared.slurm or SlurmOptions(), job_name(recipe), launch_environment(spec))

            if detach:
                lock.hand_to_slurm(submit_detached(prepared).job_id)  # the job holds the directory now
                return 0
        return supervise(prepared.spec, allow=Allowances.of(recipe), max_restarts=recipe.max_restarts,
                         resume=resume, replan=replan, spare_hosts=spares, allow_shrink=allow_shrink,
                         start_job=starter)
    finally:
        lock.release()


def launch_module(hosts: Path, launcher: str, module: list[str], run_dir: Path, env: list[str] | None = None,
                  job_name: str = "medtrain") -> int:
    """Start `python -m MODULE ARGS` on every rank of a hostfile through the same launcher as training (the
    sharded eval uses it); returns the launcher's exit code (under Slurm: the batch job's, waited for)."""


    run_dir = Path(run_dir).resolve()
    spec = LaunchSpec(pool=read_hostfile(hosts), hostfile=Path(hosts), launcher=launcher,
                      entry=["--module", "--no_local_rank", *module], run_dir=run_dir, master_port=free_port(),
                      env=parse_env(env or []))
    validate(spec, dry_run=False)
    write_launcher_files(spec)
    sys.stdout.flush()
    if launcher == "slurm":

        job = SlurmJob(spec, SlurmOptions(), job_name, launch_environment(spec))
        while (code := job.poll()) is None:
            time.sleep(1)
        return code
    return subprocess.run(build_command(spec), env=launch_environment(spec)).returncode
