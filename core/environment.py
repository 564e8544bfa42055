"""Can this host run a rank? The packages medtrain declares, and the GPUs against the torch build.

Checked by every host's first rank in `launch --check` (a preflight table row per host) and by every training
rank before it loads a model, so a missing package or a torch without kernels for the GPU is one line with its
fix within seconds, not a chained traceback minutes into the run on all ranks.
"""

from __future__ import annotations

import os
import socket

from medtrain.core.errors import UserError
from medtrain.core.gpu_build import DeviceFacts, runtime_problems
from medtrain.core.provenance import missing_requirements_problem


class EnvironmentProblem(UserError):
    """This host cannot run the rank: said by each host's first rank (and rank 0), not by every rank."""

    @property
    def local(self) -> bool:  # type: ignore[override]
        return os.environ.get("LOCAL_RANK", "0") == "0"


def environment_problems(precision: str | None, wants_gpu: bool, facts: DeviceFacts | None = None) -> list[str]:
    missing = missing_requirements_problem()
    return ([missing] if missing else []) + runtime_problems(facts or DeviceFacts.here(), precision, wants_gpu)


def check_environment(precision: str, wants_gpu: bool) -> None:
    """Raise one EnvironmentProblem naming every problem of this host (a rank's first act after joining)."""
    problems = environment_problems(precision, wants_gpu)
    if problems:

        raise EnvironmentProblem(f"{socket.gethostname()}: {'; '.join(problems)}")
