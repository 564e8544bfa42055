"""What `medtrain launch --check` runs on every rank: report versions, join the group, all-reduce, leave cleanly.

Each rank prints one marked JSON line before joining, so a host that starts but cannot join is still seen.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta

from medtrain.core.environment import environment_problems
from medtrain.core.gpu_build import DeviceFacts
from medtrain.core.provenance import versions
from medtrain.core.rank import export_rank_env, run_rank
from medtrain.launch.host_checks import ENV, check_host, decode

MARKER = "MEDTRAIN_PREFLIGHT "


def _say(payload: dict) -> None:
    print(MARKER + json.dumps(payload, sort_keys=True), flush=True)


def rank_info() -> dict:
    export_rank_env()
    return {
        "rank": int(os.environ.get("RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "node_rank": int(os.environ.get("CROSS_RANK", os.environ.get("SLURM_NODEID", "0"))),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "hostname": socket.gethostname(),
        "device": DeviceFacts.here().to_dict(),
        **versions(),
    }


def all_reduce_once(info: dict) -> None:
    import torch
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    total = torch.tensor([float(info["rank"])], device=get_accelerator().current_device_name())
    dist.all_reduce(total)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, info)
    if dist.get_rank() == 0:
        _say({"event": "done", "allreduce": total.item(), "world_size": dist.get_world_size(), "ranks": gathered})
    dist.barrier()


def host_problems(info: dict) -> list[str]:
    """Each host's first rank: the packages and the GPUs against the torch build (core.environment), then the
    launch's own expectations (launch.host_checks) when it gave some."""

    if info["local_rank"] != 0:
        return []
    try:
        expect = decode(os.environ[ENV]) if os.environ.get(ENV) else {}
        problems = environment_problems(expect.get("precision"), bool(expect.get("wants_gpu")),
                                        DeviceFacts.from_dict(info["device"]))
        return problems + (check_host(expect) if expect else [])
    except Exception as e:  # a check that breaks is a finding too, not a silent pass
        return [f"host checks failed here ({type(e).__name__}: {e})"]


def main() -> None:
    info = rank_info()
    _say({"event": "start", **info, "host_problems": host_problems(info)})
    run_rank(lambda: all_reduce_once(info), timedelta(seconds=int(os.environ.get("MEDTRAIN_PREFLIGHT_TIMEOUT", "60"))))


if __name__ == "__main__":
    main()
