"""The life of one rank, the same for training, preflight and eval ranks: find its place, join the group with a
finite timeout, run, leave the group, exit with a code that means something.

DeepSpeed's pdsh and local launchers set RANK/LOCAL_RANK/WORLD_SIZE; its slurm and openmpi runners start the
script directly, and the ranks must read their place from the scheduler's own variables. A rank that exits
without destroying its process group aborts with "terminate called without an active exception" (DESIGN), so
every path out goes through `destroy_process_group` and `os._exit`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from medtrain.core.errors import RunFailed, UserError
from medtrain.core.heartbeat import DIR_ENV, heartbeat

_SCHEDULERS = (
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
)
TIMEOUT_ENV = "MEDTRAIN_DIST_TIMEOUT_MIN"

STOP_SIGNAL = signal.SIGUSR2
"""Asks a rank to save at the end of its step and stop (SIGUSR1 is faulthandler's, for the watchdog's stacks).
The launcher sends it on its own SIGUSR1, and a Slurm batch script when the job is warned of its time limit."""
STOPPED_CODE = 3
"""A rank's exit code after it saved and stopped on request: the launcher resumes (time limit) or says so."""
_stop = {"requested": False}


class Stopped(Exception):
    """Every rank saved and stops, as asked: not a failure."""

    exit_code = STOPPED_CODE


def stop_requested() -> bool:
    return _stop["requested"]


def _on_stop_signal(signum, frame) -> None:
    _stop["requested"] = True


def export_rank_env() -> None:
    """Fill RANK, LOCAL_RANK and WORLD_SIZE from a scheduler when the launcher did not."""
    if "RANK" in os.environ:
        return
    for rank, local, size in _SCHEDULERS:
        if rank in os.environ and size in os.environ:
            os.environ["RANK"] = os.environ[rank]
            os.environ["LOCAL_RANK"] = os.environ.get(local, "0")
            os.environ["WORLD_SIZE"] = os.environ[size]
            return


def dist_timeout(default_minutes: float = 30.0) -> timedelta:
    """How long a collective may wait before the group gives up (MEDTRAIN_DIST_TIMEOUT_MIN)."""
    return timedelta(minutes=float(os.environ.get(TIMEOUT_ENV, default_minutes)))


def join(timeout: timedelta) -> None:
    """Pick this rank's device from LOCAL_RANK, then join the process group on the accelerator's backend
    (NCCL on CUDA, gloo/ccl on CPU)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    export_rank_env()
    get_accelerator().set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(timeout=timeout)


SHM_PREFIX = "deepspeed_allreduce_buffer"


def release_shm_buffer() -> None:
    """DeepSpeed's CPU all-reduce (ops/csrc/cpu/comm/shm.cpp) creates /dev/shm/deepspeed_allreduce_buffer_
    {uid}_{addr}_{port}_{rank} and never unlinks it: 66 MB per rank per launch that stay in RAM until reboot (a
    day of test runs here had filled 22 of 24 GiB). The mapping lives on in ranks still using it; the name goes."""
    addr, port, rank = (os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK"))
    if addr and port and rank:
        try:
            os.unlink(f"/dev/shm/{SHM_PREFIX}_{os.getuid()}_{addr}_{port}_{rank}")
        except OSError:
            pass


def is_main() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


# a peer's end seen from this rank: the consequence of another rank's failure (or of medtrain ending the job),
# whose traceback goes to this rank's log only
_PEER_LOST = re.compile(r"Connection reset by peer|Connection closed by peer|Broken pipe|Socket Timeout|"
                        r"communicator was aborted|NCCL communicator|Connection refused|ProcessGroup.*(closed|abort)",
                        re.IGNORECASE)


class _Tee(io.TextIOBase):
    """This rank's stdout/stderr, also written to RUN_DIR/logs/rankN.log."""

    def __init__(self, stream, log) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        try:
            self.log.write(text)
        except (OSError, ValueError):
            pass  # a full disk or a closed log loses the copy, not the run
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        try:
            self.log.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def open_rank_log():
    """RUN_DIR/logs/rankN.log for a rank launched by medtrain (its heartbeat dir names the run); stdout and
    stderr go there too, so a rank's traceback outlives the terminal that started the run."""

    beats = os.environ.get(DIR_ENV)
    if not beats:
        return None
    export_rank_env()
    path = Path(beats).parent / "logs" / f"rank{os.environ.get('RANK', '0')}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (open for the rank's life)
    except OSError:
        return None
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    _follow_tees({out: sys.stdout, err: sys.stderr})
    return log


def _follow_tees(streams: dict) -> None:
    """Logging handlers made before the tees (DeepSpeed's, at its import) write to the streams they found then:
    point them at the tees, so DeepSpeed's lines reach the rank log too."""
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values()
                                      if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in streams:
                handler.setStream(streams[handler.stream])


def run_rank(body: Callable[[], object], timeout: timedelta | None = None) -> NoReturn:
    """Join, run `body`, leave, exit: 0 ok, 2 a UserError (one line, rank 0), 1 a failed run or a bug
    (a RunFailed is one line on rank 0; anything else keeps its traceback on every rank that raised it)."""

    beat = heartbeat()  # first sign of life, before torch loads: the watchdog can find and end us from here on
    signal.signal(STOP_SIGNAL, _on_stop_signal)  # from here on a stop request is remembered, never fatal
    log = open_rank_log()
    import torch.distributed as dist

    code = 0
    try:
        join(timeout or dist_timeout())
        body()
    except (UserError, RunFailed) as e:
        if is_main():
            print(f"error: {e}", file=sys.stderr, flush=True)
        elif getattr(e, "local", False):
            print(f"error: [rank {os.environ.get('RANK', '?')}] {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except Stopped as e:
        if is_main():
            print(f"medtrain: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except Exception as e:
        if log is not None and _PEER_LOST.search(f"{type(e).__name__}: {e}"):
            traceback.print_exc(file=log)  # a consequence: one line on the console, the traceback in the log
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            print(f"[rank {os.environ.get('RANK', '?')}] lost its peers ({first}); traceback in {log.name}",
                  file=sys.__stderr__, flush=True)
        else:
            traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if dist.is_initialized():
            dist.destroy_process_group()
        release_shm_buffer()
        beat.beat("exited", code=code)
    os._exit(code)  # a clean exit: no "terminate called without an active exception"
