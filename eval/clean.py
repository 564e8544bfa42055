"""The clean subset of a finished evaluation, scored from its own outputs: the questions `--exclude` names left
out of predictions.jsonl and the metrics computed again, with no model run. CMExam is scored again from the
recorded outputs (the same extraction); MMLU-style tasks from the recorded choices. Used by the sweep, which
evaluates every cell on the full benchmarks once and reports the clean columns beside them."""

from __future__ import annotations

import json
from operator import itemgetter
from pathlib import Path

from medtrain.core.publish import publish_json
from medtrain.eval.exclude import load_exclusion
from medtrain.eval.run import aggregate_mc, excluded, run_generate, write_outputs
from medtrain.eval.task import MultipleChoiceTask, TaskError, load_task


def clean_results(cell: Path, exclude: Path, out: Path) -> dict:
    """results.json of `cell`'s evaluation on the questions `exclude` does not name, written into `out`."""
    full = json.loads((cell / "results.json").read_text(encoding="utf-8"))
    task = load_task(full["task"])
    if not isinstance(task, MultipleChoiceTask):
        results = run_generate(full["task"], Path(full["data"]["path"]), out, predictions=cell / "predictions.jsonl",
                               template=full["template"]["name"], extract_mode=full["extract"],
                               max_new_tokens=full["config"]["max_new_tokens"], limit=full["data"]["limit"],
                               exclude=exclude) | {"scored_from": str(cell)}
        publish_json(out / "results.json", results)
        return results
    exclusion = load_exclusion(exclude, full["task"])
    predictions = [json.loads(x) for x in (cell / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    by_id = {p["id"]: p for p in predictions}
    if len(by_id) != len(predictions):
        raise TaskError(f"{cell / 'predictions.jsonl'}: an id appears twice; evaluate the cell again")
    kept = exclusion.keep(predictions, itemgetter("id"))
    subjects = list(full["metrics"]["by_subject"])
    metrics = aggregate_mc(task, kept, subjects, full["metrics"]["truncated_prompts"])
    results = {**full, "metrics": metrics, "scored_from": str(cell), **excluded(exclusion)}
    write_outputs(out, results, kept)
    return results
