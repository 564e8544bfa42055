"""What every rank runs for `medtrain eval ... --hosts H`: the eval call written by the launching side, on this
rank's share of the batches (eval.shard); rank 0 gathers and writes the outputs.

    python -m medtrain.eval.ranked REQUEST.json      (started by the deepspeed launcher on every rank)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medtrain.core.publish import publish_json
from medtrain.core.rank import run_rank
from medtrain.eval.shard import Shard

REQUEST_FORMAT = "medtrain.eval_request/1"


def write_request(path: Path, task: str, kwargs: dict) -> Path:
    return publish_json(path, {"format": REQUEST_FORMAT, "task": task,
                               "kwargs": {k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}})


def run_request(path: Path) -> None:
    from medtrain.eval.run import run_task  # torch and transformers: only on the ranks, not in the CLI

    request = json.loads(Path(path).read_text(encoding="utf-8"))
    if request.get("format") != REQUEST_FORMAT:
        raise ValueError(f"{path}: not a {REQUEST_FORMAT} file")
    kwargs, shard = dict(request["kwargs"]), Shard.of_process_group()
    run_task(request["task"], Path(kwargs.pop("out")), shard=shard, **kwargs)


def main() -> None:
    request = Path(sys.argv[-1])
    run_rank(lambda: run_request(request))


if __name__ == "__main__":
    main()
