"""Shared by the benchmarks: where results go, and how they are saved (JSON, with the machine they ran on)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

# BENCH_RESULTS: bench/gpu/check.sh saves straight into the folder the device hands back
RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **payload}, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    print(f"saved {path}")
    return path


def stop(signum, frame) -> None:
    """SIGTERM handler for the benchmarks (`timeout`, the device's command limit): unwind, so that temporary
    directories holding a 1B model and its export (GBs) are removed on the way out."""
    raise SystemExit("stopped by SIGTERM")
