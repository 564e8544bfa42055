"""Rank discovery for every launcher, so one entry point serves pdsh, local, slurm and openmpi.

DeepSpeed's pdsh and local launchers set RANK/LOCAL_RANK/WORLD_SIZE; its slurm and openmpi runners start the
script directly, and the ranks must read their place from the scheduler's own variables.
"""

from __future__ import annotations

import os

_SCHEDULERS = (
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
)


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
