"""`medtrain sweep --contamination`: the contamination check once per training dataset the sweep uses (the
continual run's and the SFT recipe's), each a cell reused while the dataset and the benchmarks are unchanged, and
the union of their findings as one file that every evaluation's clean subset leaves out."""

from __future__ import annotations

import json
from pathlib import Path

from medtrain.contamination.check import DEFAULT_MIN_RATIO, DEFAULT_NGRAM, ContaminationRequest, check, summary_table
from medtrain.core.digest import sha256_file
from medtrain.core.log import get_logger
from medtrain.core.publish import publish_text
from medtrain.core.recipe import load_recipe
from medtrain.experiments import cells

log = get_logger(__name__)


def training_datasets(continual: Path, sft_recipe: Path, overrides: list[str]) -> list[Path]:
    """The prepared datasets the sweep's models train on, each once."""
    found = [Path(load_recipe(continual / "recipe.yaml").data), Path(load_recipe(sft_recipe, overrides).data)]
    return list(dict.fromkeys(p.resolve() for p in found))


def check_training_data(datasets: list[Path], evals: dict[str, Path], out: Path) -> Path:
    """out/contaminated.jsonl: every question any dataset holds, once (the first dataset's finding)."""
    lines: dict[tuple[str, str], str] = {}
    for k, dataset in enumerate(datasets):
        cell = out / f"{k}_{dataset.name}"
        identity = {"train": str(dataset), "manifest_sha256": sha256_file(dataset / "manifest.json"),
                    "evals": {task: cells.data_digest(path) for task, path in evals.items()},
                    "ngram": DEFAULT_NGRAM, "min_ratio": DEFAULT_MIN_RATIO}
        if cells.claim(cell, identity, cell / "summary.json") != "reuse":
            log.info(f"sweep: contamination check of {dataset}")
            summary = check(ContaminationRequest([dataset], list(evals.items()), cell, overwrite=True), log.info)
            cells.record(cell, identity)
            log.info("\n" + summary_table(summary))
        for line in (cell / "contaminated.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            lines.setdefault((rec["task"], str(rec["id"])), line)
    publish_text(out / "contaminated.jsonl", "".join(x + "\n" for x in lines.values()))
    return out / "contaminated.jsonl"
