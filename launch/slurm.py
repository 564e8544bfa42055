"""Slurm: the allocation is the truth. One sbatch script per attempt, ranks started by srun, the job watched.

DeepSpeed's own `--launcher slurm` path was tried against Slurm 22.05 and does not run as generated: it
ssh-probes the first host from inside the job, runs its local launcher when the allocation has one node, drops
`--module`, passes no MASTER_ADDR/MASTER_PORT (the ranks fall back to MPI discovery), and its `srun
--export=ALL,PATH=...` does not change the tasks' PATH. So the script exports what the ranks need itself and
starts them with srun, one task per rank, on one node as on many; the ranks read their place from SLURM_PROCID /
SLURM_LOCALID / SLURM_NTASKS (core.rank) and join through the DeepSpeed engine as under any launcher.

MASTER_ADDR is the first node's NodeAddr (`scontrol show node`), not its Slurm name, which need not resolve.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from medtrain.core.heartbeat import DIR_ENV, Beat
from medtrain.core.log import get_logger
from medtrain.core.publish import publish_text
from medtrain.core.rank import STOP_SIGNAL
from medtrain.launch.job import JobHandle
from medtrain.launch.launcher import LaunchError, LaunchSpec, ranks_env

log = get_logger(__name__)

_SAFE = re.compile(r"^[\w.:,+=/@%-]+$")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE", "SPECIAL_EXIT"}
NEVER = ("PartitionNodeLimit", "PartitionTimeLimit", "PartitionConfig", "PartitionDown", "InvalidAccount",
         "InvalidQOS", "BadConstraints", "QOSMaxNodePerJobLimit", "QOSMaxWallDurationPerJobLimit",
         "AssocMaxNodesPerJobLimit", "AssocMaxWallDurationPerJobLimit")
"""Pending reasons a job never leaves: report them instead of waiting forever."""


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    qos: str | None = None
    sbatch_args: list[str] = field(default_factory=list)
    gpus: bool = True
    """Ask for GPUs (--gres=gpu:N): GPU presets only; a CPU cluster refuses the request."""
    nodelist: bool = True
    """The hostfile's names become --nodelist (False when the pool came from --nodes)."""
    warn_seconds: int = 300
    """With --time: Slurm signals the batch script this long before the limit (--signal=B:USR1@N) and every rank
    saves and stops, so the next job resumes from that step instead of the last periodic checkpoint. Slurm may
    send it up to a minute early. 0: no warning."""
    requeue: int = 0
    """A detached run (--detach with --time): the job requeues itself after the warning's save, up to this many
    times (the recipe's max_restarts), and each requeued job resumes from the newest verified checkpoint."""

    def validate(self) -> None:
        for name in ("partition", "account", "time", "qos"):
            value = getattr(self, name)
            if value is not None and not _SAFE.match(value):
                raise LaunchError(f"--{name} '{value}' has characters sbatch does not take; use letters, digits, "
                                  "'.', ':', '-', ','")
        for arg in self.sbatch_args:
            if not arg.startswith("--") or not _SAFE.match(arg):
                raise LaunchError(f"--sbatch-arg '{arg}' must look like --name=value (letters, digits, '.:,+=/-')")


def rank_argv(entry: list[str]) -> list[str]:
    """DeepSpeed launcher entry (--module --no_local_rank MOD ARGS | script ARGS) -> what srun starts."""
    args = [a for a in entry if a != "--no_local_rank"]
    if args and args[0] == "--module":
        return [sys.executable, "-u", "-m", *args[1:]]
    return [sys.executable, "-u", *args]


def render_sbatch(spec: LaunchSpec, job_name: str, opts: SlurmOptions | None = None) -> str:
    opts = opts or SlurmOptions()
    opts.validate()
    slots = set(spec.pool.values())
    if len(slots) != 1:
        raise LaunchError(f"{spec.hostfile}: slurm starts the same number of ranks on every node, got "
                          f"{sorted(slots)}; give every host the same slots")
    per_node = slots.pop()
    head = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={len(spec.pool)}",
            f"#SBATCH --ntasks-per-node={per_node}", f"#SBATCH --output={spec.run_dir.resolve()}/slurm-%j.out"]
    if opts.gpus:
        head.append(f"#SBATCH --gres=gpu:{per_node}")
    if opts.nodelist:
        head.append(f"#SBATCH --nodelist={','.join(spec.pool)}")
    head += [f"#SBATCH --{k}={getattr(opts, k)}" for k in ("partition", "account", "time", "qos") if getattr(opts, k)]
    warn = opts.time and opts.warn_seconds > 0
    if warn:
        head.append(f"#SBATCH --signal=B:USR1@{int(opts.warn_seconds)}")
    heal = bool(warn and opts.requeue > 0)
    if heal:  # the same job id comes back: its log goes on in the same file
        head += ["#SBATCH --requeue", "#SBATCH --open-mode=append"]
    head += [f"#SBATCH {arg}" for arg in opts.sbatch_args]
    env = {k: v for k, v in ranks_env(spec).items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    body = [
        "set -euo pipefail",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "# the node's address: its Slurm name need not resolve",
        'MASTER_ADDR=$(scontrol show node "$first" | sed -n \'s/.*NodeAddr=\\([^ ]*\\).*/\\1/p\')',
        'export MASTER_ADDR="${MASTER_ADDR:-$first}"',
        "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        *[f"export {k}={shlex.quote(v)}" for k, v in env.items()],
        "# one thread per rank unless the job asked for more cores per task (unset, ranks ran ~8x slower)",
        'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
        f"cd {shlex.quote(str(Path.cwd()))}",
    ]
    argv = rank_argv(spec.entry)
    srun = "srun --kill-on-bad-exit=1 --export=ALL " + shlex.join(argv)
    if heal and "--resume" not in argv:  # a requeued job (SLURM_RESTART_COUNT > 0) resumes
        body.append('resume=(); [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && resume=(--resume)')
        srun += ' "${resume[@]}"'
    if not warn:
        body += [srun, ""]
    else:  # srun in the background so the trap runs at once; srun passes SIGUSR2 on to every task
        body += [
            f"{srun} &",
            "ranks=$!",
            "warned=0",
            "trap 'warned=1; echo \"medtrain: Slurm warned job $SLURM_JOB_ID of its time limit; every rank saves and "
            f"stops\"; kill -{STOP_SIGNAL.name.removeprefix('SIG')} $ranks' USR1",
            "set +e",
            'while true; do wait "$ranks"; code=$?; kill -0 "$ranks" 2>/dev/null || break; done',
            *(_requeue_lines(spec, opts.requeue) if heal else []),
            'exit "$code"',
            "",
        ]
    return "\n".join(head + body)


# appends the requeue to restarts.jsonl (what `medtrain status` lists), with the last step metrics.jsonl logged
_RECORD_REQUEUE = """
import json, pathlib, sys, time
run, job, count, budget = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
reached = json.loads(lines[-1]).get("step", 0) if lines else 0
text = f"Slurm warned job {job} of its time limit after step {reached}; requeued ({count + 1} of {budget})"
record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cause": {"kind": "requeued", "job": job, "text": text},
          "reached_step": reached, "resume_step": reached, "action": "requeued"}
with open(run / "restarts.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\\n")
print("medtrain: " + text, flush=True)
"""


def _requeue_lines(spec: LaunchSpec, budget: int) -> list[str]:
    """A detached run heals itself: after the warning's save, the job requeues itself while the budget lasts."""
    record = shlex.join([sys.executable, "-c", _RECORD_REQUEUE, str(spec.run_dir.resolve())])
    return [f'if [ "$warned" = 1 ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {int(budget)} ]; then',
            f'  {record} "$SLURM_JOB_ID" "${{SLURM_RESTART_COUNT:-0}}" {int(budget)}',
            '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
            "fi"]


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def submit(script: Path, env: dict) -> str:
    done = _run(["sbatch", "--parsable", str(script)], env)
    if done.returncode != 0:
        raise LaunchError(f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def job_state(job_id: str, env: dict) -> tuple[str, str, int]:
    """(state, pending reason, exit code) from scontrol; ('GONE', '', 1) once Slurm has forgotten the job."""
    done = _run(["scontrol", "show", "job", "-o", job_id], env)
    if done.returncode != 0:
        return "GONE", "", 1
    fields = dict(re.findall(r"(\w+)=(\S*)", done.stdout))
    code, _, sig = fields.get("ExitCode", "1:0").partition(":")
    exit_code = int(code) if int(code or 0) else (128 + int(sig) if sig and int(sig) else 0)
    return fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""), exit_code


class SlurmJob(JobHandle):
    """A submitted attempt as the supervisor handles any job (launch.job.JobHandle): poll, end, the log streamed."""

    remote = True

    def __init__(self, spec: LaunchSpec, opts: SlurmOptions, job_name: str, env: dict, echo: bool = True):

        self.spec, self.env, self.echo = spec, env, echo
        script = publish_text(spec.run_dir / "launch.sbatch", render_sbatch(spec, job_name, opts))
        self.job_id = submit(script, env)
        self.log = spec.run_dir / f"slurm-{self.job_id}.out"
        self._offset, self._code = 0, None
        self.state = ""
        """Slurm's last word on the job (TIMEOUT, PREEMPTED, ...), for the supervisor's record."""
        self.console = None
        """The supervisor's console (launch/console.py): the job's log goes through it when set."""
        if echo:
            log.info(f"medtrain: submitted batch job {self.job_id}; its log: {self.log}")

    def host_of(self, rank: int) -> str:
        """The node a rank runs on, from its heartbeat (Slurm places the tasks, not the hostfile)."""

        beat = Beat.read(Path(self.spec.env.get(DIR_ENV, self.spec.run_dir / "heartbeats")) / f"rank{rank}.json")
        return beat.host if beat else "?"

    def stream(self) -> None:
        if self.log.is_file():
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            self._offset += len(chunk)
            if chunk and self.console is not None:
                self.console.feed(chunk, console=self.echo)
            elif chunk and self.echo:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()

    def poll(self) -> int | None:
        if self._code is not None:
            return self._code
        self.stream()
        state, reason, code = job_state(self.job_id, self.env)
        self.state = state
        if state == "PENDING" and reason.startswith(NEVER):
            _run(["scancel", self.job_id], self.env)
            raise LaunchError(f"job {self.job_id} can never start ({reason}): the allocation asked for "
                              f"{len(self.spec.pool)} nodes x {next(iter(self.spec.pool.values()))} tasks; "
                              "check the partition's limits (sinfo, scontrol show partition) and ask for less")
        if state in TERMINAL or state == "GONE":
            time.sleep(0.5)  # the last lines of the log
            self.stream()
            self._code = code if code or state == "COMPLETED" else 1
            return self._code
        return None

    def process_state(self, beat: Beat) -> str:
        return "?"

    def ask_for_stacks(self, beats: list[Beat]) -> None:
        """scancel signals every task of the job's steps (not the batch shell)."""
        _run(["scancel", "--signal=USR1", self.job_id], self.env)
        _run(["scancel", "--signal=CONT", self.job_id], self.env)

    def signal_ranks(self, beats: list[Beat], sig) -> None:
        """Every task of the job's steps, wherever Slurm placed it."""
        _run(["scancel", f"--signal={sig.name.removeprefix('SIG')}", self.job_id], self.env)

    def end(self, beats: list[Beat]) -> None:
        _run(["scancel", self.job_id], self.env)
        deadline = time.time() + 60
        while time.time() < deadline and job_state(self.job_id, self.env)[0] not in TERMINAL | {"GONE"}:
            time.sleep(0.5)
        self.stream()

    def release_shm(self) -> None:
        pass
