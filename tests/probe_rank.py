"""A rank that joins the group the way the trainer will, all-reduces its rank, and writes what it saw."""

import json
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist

from medtrain.core.rank import export_rank_env


def main(out_dir: str) -> None:
    export_rank_env()
    deepspeed.init_distributed(timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    report = {
        "rank": rank,
        "world_size": world,
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "node_rank": int(os.environ.get("CROSS_RANK", "0")),
        "hostname": socket.gethostname(),
        "allreduce": total.item(),
        "master_addr": os.environ.get("MASTER_ADDR"),
        "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
    }
    path = Path(out_dir) / f"rank{rank}.json"
    path.write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
