"""Messages for people go through `logging`, as in torchtune and torchtitan: each module takes
`get_logger(__name__)` and says what it has to say where it is, instead of a `say`/`print` callback handed from
function to function. Library use (tests, notebooks) gets ordinary log records; the command line and the ranks
call `setup_logging` for a console: INFO on stdout, warnings and errors on stderr, the message alone (medtrain's
lines already say what they are: "warning: ...", "medtrain: ...").

A rank's stdout and stderr are its rank log (core.rank tees them) and reach the launcher's console, so a line
every rank would print once per rank — 120 at the paper's scale — goes through `log_rank_zero`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

ROOT = "medtrain"
logging.getLogger(ROOT).setLevel(logging.INFO)  # medtrain's notes are INFO; the root logger's default would drop them


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name`, under "medtrain" (modules of a checkout run as a script included)."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


def fmt_seconds(s: float) -> str:
    """A duration as h:mm:ss, as training's log lines, the sweep and `medtrain status` show elapsed time and ETA."""
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def rank() -> int:
    """This process's global rank: torch.distributed's once joined, the launcher's RANK before, 0 alone."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def log_rank_zero(logger: logging.Logger, msg: str, level: int = logging.INFO) -> None:
    """Log on rank 0 only: for what every rank knows alike (the step plan, a checkpoint written, a resume)."""
    if rank() == 0:
        logger.log(level, msg)


class _Console(logging.Handler):
    """INFO and below to stdout, warnings and errors to stderr; the streams are looked up at each record (pytest's
    capture and core.rank's tees replace them), or a redirect takes every record (the launcher's console)."""

    redirect: Callable[[str], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if self.redirect is not None:
                self.redirect(text)
                return
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 (logging's own rule: a failing handler must not fail the caller)
            self.handleError(record)


def _console() -> _Console | None:
    return next((h for h in logging.getLogger(ROOT).handlers if isinstance(h, _Console)), None)


def setup_logging(level: int = logging.INFO) -> None:
    """Give medtrain's loggers the console (idempotent): the command line's entry and each rank's call it."""
    logger = logging.getLogger(ROOT)
    if _console() is None:
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def redirect_console(write: Callable[[str], None]) -> Callable[[], None]:
    """Send the console's records to `write` (the launcher's Console, which keeps launch.log and can be muted)
    instead of stdout/stderr, until the returned function is called; without a console (library use) nothing
    changes."""
    handler = _console()
    if handler is None:
        return lambda: None
    before, handler.redirect = handler.redirect, write

    def undo() -> None:
        handler.redirect = before
    return undo
