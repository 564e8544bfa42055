"""What a fault costs: the tiny continual run uninterrupted, then with one rank SIGKILLed and with one rank
SIGSTOPped after step 5, in the same session. Prints detection latency, restart overhead (wall time over the
uninterrupted run's), steps and seconds lost, and checks the faulted runs' losses equal the uninterrupted ones.

    python bench/reliability.py [--hang-timeout 20]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_fixtures import CONT_RECIPE, CONTINUAL, LaunchedRun, at_step, launch_args, make_tiny_data  # noqa: E402

from bench.common import save  # noqa: E402
from medtrain.train.metrics import read_metrics  # noqa: E402


def run(tiny: dict, out: Path, *extra: str, fault: signal.Signals | None = None) -> dict:
    args = launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *CONTINUAL, *extra)
    t0 = time.time()
    launched = LaunchedRun(args, out)
    faulted = launched.signal_at(1, fault, at_step(5)) if fault else None
    code = launched.wait()
    wall = time.time() - t0
    if code != 0:
        raise SystemExit(f"{out}: exit {code}\n{launched.log[-3000:]}")
    restarts = launched.restarts()
    return {"wall_s": round(wall, 1), "restarts": restarts, "losses": [r["loss"] for r in read_metrics(
        out / "metrics.jsonl")], "fault_at": faulted["signalled_at"] - t0 if faulted else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hang-timeout", type=float, default=20.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="medtrain-reliability-"))
    tiny = make_tiny_data(root / "tiny")
    base = run(tiny, root / "base")
    killed = run(tiny, root / "killed", "--max-restarts", "1", fault=signal.SIGKILL)
    stopped = run(tiny, root / "stopped", "--max-restarts", "2", "--hang-timeout", str(args.hang_timeout),
                  fault=signal.SIGSTOP)
    rows = {}
    for name, r in (("sigkill", killed), ("sigstop", stopped)):
        [rec] = r["restarts"]
        rows[name] = {
            "cause": rec["cause"]["kind"], "detected_after_s": rec["cause"].get("after_s"),
            "steps_lost": rec["steps_lost"], "seconds_lost": rec["seconds_lost"],
            "wall_s": r["wall_s"], "uninterrupted_wall_s": base["wall_s"],
            "overhead_s": round(r["wall_s"] - base["wall_s"], 1),
            "wall_ratio": round(r["wall_s"] / base["wall_s"], 2),
            "losses_equal": r["losses"] == base["losses"],
        }
        print(f"{name}: {rows[name]}")
    save("reliability", {"hang_timeout_s": args.hang_timeout, "recipe": "tiny continual, 2 ranks, 12 steps, "
                         "checkpoint every 4", "results": rows})


if __name__ == "__main__":
    main()
