"""`medtrain sweep`: the paper's Table 3 experiment. For each continual-pretraining checkpoint (0 = the base
model) fine-tune with the SFT recipe, evaluate CMExam, MMLU and CMMLU, and write the table.

Every cell lives in its own directory and is skipped when its results exist, so a sweep that died (or a
cluster slot that ended) continues where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from medtrain.core.checkpoint_files import (
    MARKER,
    CheckpointError,
    checkpoint_dirs,
    complete_checkpoints,
    step_of,
    tag_for,
    verify,
)
from medtrain.core.digest import sha256_file
from medtrain.core.errors import RunFailed
from medtrain.core.log import fmt_seconds, get_logger
from medtrain.core.publish import publish_json, publish_text
from medtrain.core.recipe import load_recipe
from medtrain.eval.data import mc_subjects, read_cmexam
from medtrain.eval.settings import DEFAULT_SCORING, DEFAULT_SHOTS, generate_settings
from medtrain.eval.task import TaskError, load_task
from medtrain.experiments import cells
from medtrain.experiments.contamination_cells import check_training_data, training_datasets
from medtrain.experiments.eval_across import eval_across
from medtrain.experiments.paper import conventions, paper_columns, table3
from medtrain.launch.run import prepare_launch, start

log = get_logger(__name__)


@dataclass
class EvalData:
    """The three benchmarks every cell is evaluated on, and the settings shared by all cells."""
    cmexam: Path
    """CMExam test CSV."""
    mmlu: Path
    cmmlu: Path
    """MMLU / CMMLU folders in their released layouts."""
    limit: int | None = None
    """Only the first N questions (per subject for MMLU/CMMLU): smoke sweeps."""
    max_new_tokens: int = 256
    batch_size: int | str = 16
    across: tuple[Path, str] | None = None
    """(hostfile, launcher): spread each eval over the ranks of the sweep's hosts instead of this process."""
    exclude: Path | None = None
    """A contaminated.jsonl (sweep --contamination): each eval also scores its clean subset from its outputs."""


def eval_settings(task: str, model: Path, data: EvalData) -> dict:
    """The keyword arguments `task` runs with for `model`, every default decided as eval decides it
    (eval.settings): passed to the run as they are, and recorded as the cell's identity."""
    if task == "cmexam":
        chosen = generate_settings(load_task(task), model, max_new_tokens=data.max_new_tokens)
        return {"data": data.cmexam, "limit": data.limit, "template": chosen.template, "extract_mode": chosen.extract,
                "max_new_tokens": chosen.max_new_tokens, "batch_size": data.batch_size}
    return {"data": getattr(data, task), "limit": data.limit, "shots": DEFAULT_SHOTS, "scoring": DEFAULT_SCORING,
            "batch_size": data.batch_size}


def eval_identity(model_id: dict, task: str, settings: dict) -> dict:
    """Everything an eval cell's number depends on besides the model: benchmark, data and the settings it ran
    with (the batch size changes no number)."""
    shown = {k: v for k, v in settings.items() if k not in ("data", "batch_size")}
    data = settings["data"]
    return {"model": model_id, "eval": {"task": task, "task_version": load_task(task).version, "data": str(data),
                                        "data_sha256": cells.data_digest(data), **shown}}


def evaluate(model: Path, model_id: dict, out: Path, data: EvalData) -> list[dict]:
    """CMExam (generation), MMLU and CMMLU (5-shot) for one model; a task done with the same settings is reused."""
    from medtrain.eval.run import run_task

    results = []
    for task in ("cmexam", "mmlu", "cmmlu"):
        cell = out / f"eval_{task}"
        settings = eval_settings(task, model, data)
        identity = eval_identity(model_id, task, settings)
        if cells.claim(cell, identity, cell / "results.json") == "reuse":
            results.append(json.loads((cell / "results.json").read_text()))
            continue
        log.info(f"sweep: eval {task}: {model}" + (f" across {data.across[0]}" if data.across else ""))
        kwargs = {"model_dir": model, **settings}
        results.append(eval_across(task, kwargs, cell, *data.across) if data.across else run_task(task, cell, **kwargs))
        cells.record(cell, identity)
    return results


def clean_subsets(out: Path, data: EvalData) -> list[dict]:
    """Each of `out`'s evaluations on the questions data.exclude does not name, scored from its outputs."""
    from medtrain.eval.clean import clean_results

    results = []
    for task in ("cmexam", "mmlu", "cmmlu"):
        full, cell = out / f"eval_{task}", out / f"eval_{task}_clean"
        identity = {"scored_from": cells.data_digest(full / "results.json"),
                    "exclude_sha256": sha256_file(data.exclude)}
        if cells.claim(cell, identity, cell / "results.json") == "reuse":
            results.append(json.loads((cell / "results.json").read_text()))
            continue
        results.append(clean_results(full, data.exclude, cell))
        cells.record(cell, identity)
    return results


def row(step: int, sft: bool, model: Path, out: Path, data: EvalData, model_id: dict) -> dict:
    """One Table 3 row: the full benchmarks, and their clean subsets under --contamination."""
    results = evaluate(model, model_id, out, data)
    found = {"step": step, "sft": sft, "model": str(model), "results": results}
    return found | ({"clean_results": clean_subsets(out, data)} if data.exclude else {})


def continual_model(continual: Path, step: int, out: Path) -> tuple[Path, dict]:
    """The HF directory of checkpoint `step` (0: the run's base model), exported once, and its identity."""
    from medtrain.train.export import export_checkpoint

    if step == 0:
        base = Path(load_recipe(continual / "recipe.yaml").model)
        return base, cells.model_identity(base)
    ckpt = continual / "checkpoints" / tag_for(step)
    target = out / "model"
    if (ckpt / MARKER).is_file():
        identity = cells.checkpoint_identity(ckpt)
    elif (target / cells.CELL_FILE).is_file():  # pruned since: the export made from it still stands
        identity = {k: v for k, v in json.loads((target / cells.CELL_FILE).read_text()).items()
                    if k != "medtrain_version"}
    else:
        raise CheckpointError(f"{ckpt}: no complete checkpoint for step {step}; the continual run keeps "
                              f"{sorted(p.name for p in (continual / 'checkpoints').glob('step_*'))}")
    if cells.claim(target, identity, target / "config.json") != "reuse":
        log.info(f"sweep: export {ckpt} -> {target}")
        export_checkpoint(ckpt, target)
        cells.record(target, identity)
    return target, identity


def check_sweep_inputs(continual: Path, sft_recipe: Path, checkpoints: list[int], out: Path, data: EvalData,
                 overrides: list[str]) -> None:
    """Everything a sweep will need, checked before the first SFT starts: a typo costs seconds, not a cell."""

    load_recipe(sft_recipe, overrides)
    if not checkpoints:
        raise CheckpointError("--checkpoints names no step; give e.g. 0,750,1500 or 'all'")
    root = continual / "checkpoints"
    missing = [s for s in checkpoints if s and not (root / tag_for(s) / MARKER).is_file()
               and not (out / f"step_{s:06d}" / "model" / cells.CELL_FILE).is_file()]
    if missing:
        have = sorted(step_of(p) for p in checkpoint_dirs(root) if (p / MARKER).is_file())
        raise CheckpointError(f"{root}: no complete checkpoint for step(s) {', '.join(map(str, missing))}; the run "
                              f"has {', '.join(map(str, have)) or 'none'} (0 is the base model)")
    for s in checkpoints:  # sizes against the manifest now; the export reads every byte back before its cell
        ckpt = root / tag_for(s)
        if s and (ckpt / MARKER).is_file():
            verdict = verify(ckpt, deep=False)
            if not verdict.usable:
                raise CheckpointError(f"{ckpt} is damaged: {verdict.reason}; drop step {s} from --checkpoints or "
                                      "restore the checkpoint")
    if 0 in checkpoints:
        base = Path(load_recipe(continual / "recipe.yaml").model)
        if not (base / "config.json").is_file():
            raise CheckpointError(f"{continual / 'recipe.yaml'}: step 0 is the base model, but model '{base}' is "
                                  "not a Hugging Face directory to fine-tune and evaluate; drop 0 from --checkpoints")
    read_cmexam(data.cmexam)
    for task in ("mmlu", "cmmlu"):
        spec = load_task(task)
        if not mc_subjects(spec, getattr(data, task)):
            raise TaskError(f"{getattr(data, task)}: no {task} subjects")


def summary_row(r: dict) -> dict:
    found = {k: v for k, v in r.items() if k not in ("results", "clean_results")}
    found |= {"metrics": paper_columns(r["results"]), "conventions": conventions(r["results"])}
    if "clean_results" in r:
        found["clean"] = {"metrics": paper_columns(r["clean_results"]), "conventions": conventions(r["clean_results"])}
    return found


def clean_rows(rows: list[dict]) -> list[dict]:
    """sweep.json's rows with their clean-subset numbers in place of the full ones (report's second table)."""
    return [r | r["clean"] for r in rows if "clean" in r]


def sft_identity(sft_recipe: Path, overrides: list[str], base_id: dict) -> dict:
    """An SFT cell: the model it starts from, the recipe after overrides, the data manifest it trains on."""

    recipe = load_recipe(sft_recipe, overrides).to_dict()
    manifest = Path(recipe["data"]) / "manifest.json"
    return {"base": base_id, "recipe": {k: v for k, v in recipe.items() if k != "output_dir"},
            "data_manifest_sha256": sha256_file(manifest) if manifest.is_file() else None}


def sweep_steps(spec: str, continual: Path) -> list[int]:
    """--checkpoints: comma-separated steps (0 is the base model), or 'all': the base and every complete one."""
    if spec == "all":

        return [0] + [step_of(p) for p in complete_checkpoints(continual / "checkpoints")]
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise CheckpointError(f"--checkpoints {spec!r} must be comma-separated step numbers, or all") from None


def sweep(continual: Path, sft_recipe: Path, checkpoints: list[int], hosts: Path, out: Path, data: EvalData, *,
          launcher: str = "local", overrides: list[str] | None = None, eval_continual: bool = True,
          contamination: bool = False) -> dict:

    check_sweep_inputs(continual, sft_recipe, checkpoints, out, data, overrides or [])
    out.mkdir(parents=True, exist_ok=True)
    if contamination:
        datasets = training_datasets(continual, sft_recipe, overrides or [])
        evals = {"cmexam": data.cmexam, "mmlu": data.mmlu, "cmmlu": data.cmmlu}
        data.exclude = check_training_data(datasets, evals, out / "contamination")
    rows, started = [], time.perf_counter()
    for k, step in enumerate(checkpoints):
        elapsed = time.perf_counter() - started
        eta = f", ETA {fmt_seconds(elapsed / k * (len(checkpoints) - k))}" if k else ""
        log.info(f"sweep: cell {k + 1} of {len(checkpoints)}: continual step {step} (elapsed "
                 f"{fmt_seconds(elapsed)}{eta})")
        cell = out / f"step_{step:06d}"
        base, base_id = continual_model(continual, step, cell)
        if eval_continual:
            rows.append(row(step, False, base, cell / "base", data, base_id))
        sft_dir = cell / "sft"
        sft_overrides = [*(overrides or []), f"model={base}", f"output_dir={sft_dir}", f"continual_step={step}"]
        sft_id = sft_identity(sft_recipe, sft_overrides, base_id)
        state = cells.claim(sft_dir, sft_id, sft_dir / "export" / "config.json")
        if state != "reuse":
            log.info(f"sweep: SFT from step {step}: {base}" + (" (resuming)" if state == "resume" else ""))
            cells.record(sft_dir, sft_id)
            prepared = prepare_launch(sft_recipe, hosts, launcher, overrides=sft_overrides, env=[],
                                      resume=state == "resume", dry_run=False)
            code = start(prepared)
            if code != 0:
                raise RunFailed(f"SFT launch for step {step} exited with {code}; rerun the sweep to resume")
        rows.append(row(step, True, sft_dir / "export", cell / "sft_eval", data, {"sft": sft_id}))
    summary = {"continual": str(continual), "sft_recipe": str(sft_recipe), "checkpoints": checkpoints,
               "contamination": str(data.exclude) if data.exclude else None,
               "rows": [summary_row(r) for r in rows]}
    publish_text(out / "table3.md", table3(rows))
    if data.exclude:
        publish_text(out / "table3_clean.md", table3(clean_rows(summary["rows"])))
    publish_json(out / "sweep.json", summary)
    sys.stdout.flush()
    return summary
