"""Run a launch to the end: watch it, end it on every node when it fails or hangs, restart it from the newest
verified checkpoint while the budget lasts, and write down every attempt in RUN_DIR/restarts.jsonl.

A rank that exits with 2 reported a problem the user must fix (a bad recipe, a full disk): no restart repeats it.
Ctrl-C or SIGTERM on `medtrain launch` ends the job on every node and does not restart. SIGUSR1 asks every rank
to save at the end of its step and stop: "stopped at step S, resume with --resume". A Slurm job warned of its
time limit (the batch script's `--signal=B:USR1@N`) saves the same way, and one ended by its limit or by
preemption is reported as such; both are resumed from the checkpoint while the restart budget lasts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from medtrain.core.checkpoint_files import MARKER, newest_good, step_of
from medtrain.core.errors import UserError
from medtrain.core.heartbeat import ATTEMPT_ENV, DIR_ENV
from medtrain.core.log import get_logger, redirect_console
from medtrain.core.rank import STOP_SIGNAL, STOPPED_CODE, TIMEOUT_ENV
from medtrain.launch.console import Console, logs_dir
from medtrain.launch.hostfile import write_hostfile
from medtrain.launch.job import Job, JobHandle
from medtrain.launch.launcher import LaunchSpec, build_command, free_port, launch_environment, write_env_file
from medtrain.launch.watchdog import Allowances, Hang, Watchdog, clear, collect_stacks

POLL_SECONDS = 0.5
BACKOFF_SECONDS = 1.0


class _Stop:
    """SIGINT/SIGTERM on the supervisor: remember it, end the job at the next poll. SIGUSR1: remember it, ask the
    ranks to save and stop at the next poll."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.save_and_stop = False
        self.forwarded = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGUSR1:
            self.save_and_stop = True
        else:
            self.signum = signum

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


FAILURES_BEFORE_REPLACING = 2

log = get_logger(__name__)


class Action(Enum):
    """What the supervisor does after an attempt ends."""
    DONE = "done"
    INTERRUPTED = "stopped"
    """Ctrl-C or SIGTERM on `medtrain launch`: the job was ended on every node."""
    STOPPED = "stopped_as_asked"
    """SIGUSR1: every rank saved and stopped."""
    GIVE_UP = "gave_up"
    """A problem the user fixes (exit 2), or the restart budget is spent."""
    CONTINUE = "continued"
    """Slurm ended the job at its time limit or by preemption: not a crash, resumed at once."""
    RESTART = "restarted"
    """A crash or a hang: restarted after a back-off, from the newest verified checkpoint."""


@dataclass
class Attempt:
    number: int
    started: float
    code: int
    record: dict = field(default_factory=dict)
    """Its line in restarts.jsonl (empty for a run that finished)."""

    @property
    def cause(self) -> str:
        return self.record.get("cause", {}).get("kind", "")


def decide(attempt: Attempt, stop: _Stop, max_restarts: int) -> Action:
    """The one place the supervisor's policy lives: what follows an attempt's end."""
    if attempt.code == 0:
        return Action.DONE
    if stop.signum is not None:
        return Action.INTERRUPTED
    if stop.save_and_stop and attempt.cause == "stopped":
        return Action.STOPPED
    if attempt.number >= max_restarts or attempt.code == 2:
        return Action.GIVE_UP
    if attempt.cause in ("time_limit", "preempted"):
        return Action.CONTINUE
    return Action.RESTART


@dataclass
class Supervision:
    """What lasts across attempts: the run, its console, the signals received and the hosts blamed so far."""
    spec: LaunchSpec
    allow: Allowances
    console: Console
    stop: _Stop
    start_job: Callable[[LaunchSpec], JobHandle] | None = None
    spares: OrderedDict[str, int] = field(default_factory=OrderedDict)
    allow_shrink: bool = False
    replan: Callable[[OrderedDict[str, int]], None] | None = None
    blamed: Counter = field(default_factory=Counter)
    failures: int = 0

    @property
    def run_dir(self) -> Path:
        return self.spec.run_dir

    def run_attempt(self, number: int, resume: bool) -> Attempt:
        """Start one attempt, watch it to its end, and say what ended it."""
        started, beats_dir = time.time(), self.run_dir / "heartbeats"
        clear(beats_dir)
        self.spec = spec = watched(replace(self.spec, master_port=free_port(), entry=_entry(self.spec.entry, resume)),
                                   self.allow, number)
        sys.stdout.flush()
        job = self._start(spec)
        dog = Watchdog(beats_dir, number, spec.world_size, self.allow, started)
        code, hang, first_dead = _watch(job, dog, self.stop, self.run_dir, beats_dir)
        job.release_shm()
        if code == 0:
            return Attempt(number, started, 0)
        if self.stop.signum is None and any(b.phase == "exited" and b.code == 2 for b in dog.beats().values()):
            code = 2  # a rank reported a problem the user fixes; whatever code the launcher passed on
        hang = None if self.stop.signum is not None else hang
        return Attempt(number, started, code, _record(self.run_dir, number, started, code, hang, first_dead, dog,
                                                      job))

    def _start(self, spec: LaunchSpec) -> JobHandle:
        if self.start_job is None:
            return Job(build_command(spec), launch_environment(spec), spec.pool, spec.launcher, spec.master_port,
                       console=self.console)
        job = self.start_job(spec)
        job.console = self.console
        return job

    def conclude(self, action: Action, attempt: Attempt, max_restarts: int) -> int | None:
        """Say and record what `action` means; the exit code when the run ends here, None when it goes on."""
        record, run_dir = attempt.record, self.run_dir
        if action is Action.DONE:
            return 0
        if action is Action.INTERRUPTED:
            _interrupted(record, self.stop.signum, run_dir, self.console)
            return 128 + self.stop.signum
        self.console.unmute()
        _say_where_the_traceback_is(record, run_dir)
        if action is Action.STOPPED:
            log.info(f"medtrain: stopped at step {record['resume_step']} as asked (SIGUSR1); checkpoint in "
                     f"{run_dir / 'checkpoints'}; resume with --resume")
            return 128 + signal.SIGUSR1
        self.failures += 1
        record["action"] = "gave_up" if action is Action.GIVE_UP else "restarted"
        _append(run_dir / "restarts.jsonl", record)
        if action is Action.GIVE_UP and attempt.code == 2:
            return 2
        if action is Action.GIVE_UP:
            log.error(f"error: run failed {self.failures} time(s), restart budget {max_restarts} spent; last: "
                      f"{record['cause']['text']} (see {run_dir / 'restarts.jsonl'})")
            return 1
        if action is Action.CONTINUE:
            log.info(f"medtrain: {record['cause']['text']}; resuming from step {record['resume_step']} "
                     f"(attempt {attempt.number + 2}, restart budget {max_restarts})")
            return None
        return self._restart_after(attempt, max_restarts)

    def _restart_after(self, attempt: Attempt, max_restarts: int) -> int | None:
        """Blame the failing host (replaced or dropped after FAILURES_BEFORE_REPLACING), then back off."""
        record, host = attempt.record, attempt.record.get("culprit_host")
        if host and (self.spares or self.allow_shrink) and len(self.spec.pool) > 1:
            self.blamed[host] += 1
            if self.blamed[host] >= FAILURES_BEFORE_REPLACING:
                self.spec = _replace_host(self.spec, host, self.spares, self.allow_shrink, self.replan)
        restart = attempt.number + 1
        wait = min(BACKOFF_SECONDS * 2 ** (restart - 1), 30.0)
        log.info(f"medtrain: {record['cause']['text']}; restart {restart}/{max_restarts} in {wait:.0f} s from "
                 f"{'step ' + str(record['resume_step']) if record['resume_step'] else 'step 0'}")
        time.sleep(wait)
        return 128 + self.stop.signum if self.stop.signum is not None else None


def watched(spec: LaunchSpec, allow: Allowances, attempt: int = 0) -> LaunchSpec:
    """The spec with what every rank needs to be watched — where its heartbeats go, which attempt it is, the
    distributed timeout past the longest allowance — written into the env file the ranks read."""
    spec = replace(spec, env={**spec.env, DIR_ENV: str(spec.run_dir / "heartbeats"), ATTEMPT_ENV: str(attempt),
                              TIMEOUT_ENV: f"{allow.dist_timeout_minutes:.2f}"})
    write_env_file(spec)
    return spec


def supervise(spec: LaunchSpec, *, allow: Allowances, max_restarts: int, resume: bool,
              replan: Callable[[OrderedDict[str, int]], None] | None = None, spare_hosts: OrderedDict[str, int]
              | None = None, allow_shrink: bool = False, start_job: Callable[[LaunchSpec], JobHandle] | None = None,
              ) -> int:
    """Launch, watch, restart; return the exit code `medtrain launch` exits with (0 ok, 1 failed, 2 a user
    error in a rank, 128+N stopped by signal N).

    A host that fails FAILURES_BEFORE_REPLACING times is swapped for a spare host with the same slots, or, with
    `allow_shrink`, dropped: the run goes on with fewer ranks and the same global batch (`replan` rewrites the
    run spec for the new pool, and the ranks re-split the checkpoint)."""
    run = Supervision(spec, allow, Console(spec.run_dir), _Stop(), start_job, OrderedDict(spare_hosts or {}),
                      allow_shrink, replan)
    undo_redirect = redirect_console(run.console.say)  # medtrain's own lines reach the console and launch.log
    try:
        number = 0
        while True:
            attempt = run.run_attempt(number, resume or number > 0)
            code = run.conclude(decide(attempt, run.stop, max_restarts), attempt, max_restarts)
            if code is not None:
                return code
            number += 1
    finally:
        run.stop.restore()
        undo_redirect()
        run.console.close()


def _interrupted(record: dict, signum: int, run_dir: Path, console: Console) -> None:
    """Ctrl-C or SIGTERM on `medtrain launch`: the job is ended on every node; recorded in restarts.jsonl like any
    other end, and said with where the run can go on from."""
    name = signal.Signals(signum).name
    record.update(cause={"kind": "interrupted", "signal": name,
                         "text": f"stopped by {name}{' (Ctrl-C)' if signum == signal.SIGINT else ''}"},
                  ranks=[], hosts=[], culprit_host=None, action="stopped")
    _append(run_dir / "restarts.jsonl", record)
    console.unmute()
    ckpt = newest_good(run_dir / "checkpoints", deep=False)
    where = (f"newest verified checkpoint: step {step_of(ckpt)} ({ckpt}); the same `medtrain launch` command with "
             f"--resume continues from there" if ckpt else
             "no checkpoint was written yet: the same `medtrain launch` command with --resume starts from step 0")
    log.info(f"medtrain: {record['cause']['text']} after step {record['reached_step']}; the job was ended on every "
             f"node; {where}")


def _say_where_the_traceback_is(record: dict, run_dir: Path) -> None:
    """The first failing rank's own log, where its traceback is (its peers' follow-on errors are elsewhere)."""
    for rank in record.get("ranks", [])[:1]:
        path = logs_dir(run_dir) / f"rank{rank}.log"
        if path.is_file() and path.stat().st_size:
            log.info(f"medtrain: rank {rank}'s output and traceback: {path} (`medtrain logs {run_dir} --rank {rank}`)")


def _replace_host(spec: LaunchSpec, host: str, spares: OrderedDict[str, int], allow_shrink: bool,
                  replan: Callable[[OrderedDict[str, int]], None] | None) -> LaunchSpec:
    """The pool without `host`: a spare with its slots in its place, else (allow_shrink) nothing in its place."""
    slots = spec.pool[host]
    spare = next((h for h, n in spares.items() if n == slots), None)
    if spare is None and not allow_shrink:
        log.info(f"medtrain: {host} keeps failing and no spare host has {slots} slots; keeping it")
        return spec
    pool = OrderedDict((spare if h == host else h, n) for h, n in spec.pool.items() if h != host or spare)
    if spare is not None:
        spares.pop(spare)
    try:
        if replan is not None:
            replan(pool)  # RunSpec for the new world: raises when no micro x accumulation gives the global batch
    except UserError as e:
        log.info(f"medtrain: cannot go on without {host}: {e}; keeping it")
        return spec
    hostfile = spec.run_dir / "hostfile"
    write_hostfile("".join(f"{h} slots={n}\n" for h, n in pool.items()), hostfile)
    what = f"replaced by spare {spare}" if spare else f"dropped: {sum(pool.values())} ranks go on"
    log.info(f"medtrain: {host} failed {FAILURES_BEFORE_REPLACING} times; {what} (hostfile {hostfile})")
    return replace(spec, pool=pool, hostfile=hostfile)


def _entry(entry: list[str], resume: bool) -> list[str]:
    if not resume or "--resume" in entry or not _is_training(entry):
        return list(entry)
    return [*entry, "--resume"]


def _is_training(entry: list[str]) -> bool:
    return "train" in entry and "medtrain" in entry


def _watch(job: JobHandle, dog: Watchdog, stop: _Stop, run_dir: Path, beats_dir: Path) -> tuple[int, Hang | None,
                                                                                          list[int]]:
    """Poll the launcher and the heartbeats until the job ends, hangs or we are told to stop."""
    first_dead: list[int] = []
    while True:
        code = job.poll()
        if code is not None:
            return code, None, first_dead
        beats = dog.beats()  # one read of the heartbeat files per poll
        if stop.signum is not None:
            _end_quietly(job, list(beats.values()))
            return 128 + stop.signum, None, first_dead
        if stop.save_and_stop and not stop.forwarded:
            log.info("medtrain: SIGUSR1: every rank saves at the end of its step and stops")
            job.signal_ranks(list(beats.values()), STOP_SIGNAL)
            stop.forwarded = True
        if not first_dead and not job.remote:
            first_dead = [b.rank for b in beats.values() if b.phase != "exited" and job.process_state(b) in ("Z", "-")]
        hang = dog.check(beats=beats)
        if hang is not None:
            out = collect_stacks(job, hang, run_dir, beats_dir)
            log.info(f"medtrain: hang detected: {hang.summary()}; stacks of every rank in {out}; ending the job on "
                     "every node")
            hang.stacks_dir = str(out)
            _end_quietly(job, list(hang.beats.values()))
            return -1, hang, first_dead
        time.sleep(POLL_SECONDS)


def _end_quietly(job: JobHandle, beats: list) -> None:
    """End the job on every node with the console muted: the ranks medtrain ends say nothing more there (their
    logs keep it); supervise() unmutes once the attempt is recorded."""
    job.console.mute()
    job.end(beats)


def _record(run_dir: Path, attempt: int, started: float, code: int, hang: Hang | None, first_dead: list[int],
            dog: Watchdog, job: JobHandle) -> dict:
    now = time.time()
    beats = dog.beats()
    if hang is not None:
        ranks = hang.stalled
        cause = {"kind": "hang", "after_s": round(hang.detected - hang.last_progress, 1), "stacks": hang.stacks_dir,
                 "text": f"hang ({hang.summary()})"}
    else:
        # a rank with no exit record was killed (or lost its node): usually the culprit, the ranks that exited
        # with a code saw it go (a closed peer); both are named
        vanished = first_dead or sorted(r for r, b in beats.items() if b.phase != "exited")
        failed = sorted(r for r, b in beats.items() if b.phase == "exited" and b.code)
        ranks = vanished + [r for r in failed if r not in vanished]
        signum = _signal_of(code)
        if signum:
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
            cause = {"kind": "signal", "signal": name, "text": f"killed by {name}"}
        else:
            cause = {"kind": "exit", "code": code, "text": f"exit code {code}"}
        said = [f"rank {', '.join(map(str, vanished))} vanished"] if vanished else []
        said += [f"rank {r} exited with {beats[r].code}" for r in failed if r not in vanished]
        if said:
            cause["text"] += f" ({'; '.join(said)})"
    ckpt = newest_good(run_dir / "checkpoints", deep=False)
    resume_step = step_of(ckpt) if ckpt else 0
    saved_at = (ckpt / MARKER).stat().st_mtime if ckpt else started
    reached = max((b.step for b in beats.values()), default=resume_step)
    if hang is None:
        cause = _scheduler_cause(beats, job, reached) or cause
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)), "attempt": attempt, "cause": cause,
        "ranks": ranks, "hosts": sorted({job.host_of(r) for r in ranks}),
        "culprit_host": job.host_of(ranks[0]) if ranks else None, "reached_step": reached,
        "resume_step": resume_step, "steps_lost": max(0, reached - resume_step),
        "seconds_lost": round(now - max(saved_at, started), 1), "attempt_seconds": round(now - started, 1),
        "pid": os.getpid(),
    }


def _scheduler_cause(beats: dict, job: JobHandle, reached: int) -> dict | None:
    """A job that every rank left after saving on request (STOPPED_CODE), or that Slurm ended at its time limit
    or by preemption: not a crash, and said as what it was."""
    stopped = bool(beats) and all(b.phase == "exited" and b.code == STOPPED_CODE for b in beats.values())
    state, job_id = job.state, job.job_id
    if job_id is not None and (stopped or state in ("TIMEOUT", "DEADLINE", "PREEMPTED")):
        kind = "preempted" if state == "PREEMPTED" else "time_limit"
        how = ("warned of its time limit; every rank saved and stopped" if stopped else
               "by preemption" if kind == "preempted" else "at its time limit")
        return {"kind": kind, "job": job_id, "state": state,
                "text": f"Slurm ended job {job_id} {how} after step {reached}"}
    if stopped:
        return {"kind": "stopped", "text": f"every rank saved and stopped at step {reached} as asked"}
    return None


def _signal_of(code: int) -> int:
    """-N from Popen, 128+N from a shell, 256-N from DeepSpeed's launch.py (it sys.exit()s a child's -N)."""
    if code < 0:
        return -code
    if 128 < code < 160:
        return code - 128
    if 224 <= code < 256:
        return 256 - code
    return 0


def _append(path: Path, record: dict) -> None:
    line = json.dumps(record, ensure_ascii=False) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # the run's own disk may be what failed: the record still reaches the console
        log.warning(f"medtrain: could not append to {path} ({e}): {line.rstrip()}")
