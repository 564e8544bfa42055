"""`medtrain eval ... --hosts H`: one eval spread over the ranks of a hostfile, started through the same launcher
as training. Ranks take whole batches of the single-process run (eval.shard), so the results written are the
ones a single process would write, question by question."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medtrain.core.errors import RunFailed
from medtrain.eval.ranked import write_request
from medtrain.launch.run import launch_module


def eval_across(task: str, kwargs: dict, out: Path, hosts: Path, launcher: str = "local") -> dict:
    """Run `task` (cmexam | mmlu | cmmlu) with eval.run.run_task keyword arguments on every rank; returns the
    results.json that rank 0 wrote into `out`."""
    out = Path(out)
    work = out.parent / f".{out.name}.ranks"
    request = write_request(work / "request.json", task, {**kwargs, "out": out.resolve()})
    code = launch_module(hosts, launcher, ["medtrain.eval.ranked", str(request.resolve())], work,
                         job_name=f"eval-{task}")
    if code != 0:
        raise RunFailed(f"eval {task} across {hosts} exited with {code}; the ranks' output above says why")
    shutil.rmtree(work, ignore_errors=True)
    return json.loads((out / "results.json").read_text(encoding="utf-8"))
