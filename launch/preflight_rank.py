"""What `medtrain launch --check` runs on every rank: report versions, join the group, all-reduce, leave cleanly.

Each rank prints one marked JSON line before joining, so a host that starts but cannot join is still seen.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import timedelta

MARKER = "MEDTRAIN_PREFLIGHT "


def _say(payload: dict) -> None:
    print(MARKER + json.dumps(payload, sort_keys=True), flush=True)


def main() -> None:
    from launch.ranks import export_rank_env
    from medtrain.provenance import versions

    export_rank_env()
    timeout = int(os.environ.get("MEDTRAIN_PREFLIGHT_TIMEOUT", "60"))
    info = {
        "rank": int(os.environ.get("RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "node_rank": int(os.environ.get("CROSS_RANK", "0")),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "hostname": socket.gethostname(),
        **versions(),
    }
    _say({"event": "start", **info})
    import deepspeed
    import torch
    import torch.distributed as dist

    deepspeed.init_distributed(timeout=timedelta(seconds=timeout))
    total = torch.tensor([float(info["rank"])])
    dist.all_reduce(total)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, info)
    if dist.get_rank() == 0:
        _say({"event": "done", "allreduce": total.item(), "world_size": dist.get_world_size(), "ranks": gathered})
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
