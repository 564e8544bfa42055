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

from core.errors import RunFailed
from core.publish import publish_json, publish_text
from medtrain.checkpoint import CheckpointError, tag_for
from medtrain.metrics import fmt_seconds


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


def say(msg: str) -> None:
    print(f"[sweep] {msg}", flush=True)


def evaluate(model: Path, out: Path, data: EvalData) -> list[dict]:
    """CMExam (generation), MMLU and CMMLU (5-shot) for one model; finished tasks are not redone."""
    from eval.run import run_cmexam, run_mc

    results = []
    for task in ("cmexam", "mmlu", "cmmlu"):
        cell = out / f"eval_{task}"
        if (cell / "results.json").is_file():
            say(f"{cell} done, reusing")
            results.append(json.loads((cell / "results.json").read_text()))
            continue
        say(f"eval {task}: {model}" + (f" across {data.across[0]}" if data.across else ""))
        if task == "cmexam":
            kwargs = {"data": data.cmexam, "model_dir": model, "limit": data.limit,
                      "max_new_tokens": data.max_new_tokens, "batch_size": data.batch_size}
        else:
            kwargs = {"model_dir": model, "data": getattr(data, task), "limit": data.limit,
                      "batch_size": data.batch_size}
        if data.across:
            from medtrain.eval_launch import eval_across

            results.append(eval_across(task, kwargs, cell, *data.across))
        elif task == "cmexam":
            results.append(run_cmexam(kwargs.pop("data"), cell, **kwargs))
        else:
            results.append(run_mc(task, kwargs.pop("model_dir"), kwargs.pop("data"), cell, **kwargs))
    return results


def continual_model(continual: Path, step: int, out: Path) -> Path:
    """The HF directory of checkpoint `step` (0: the run's base model), exported once."""
    from core.recipe import load_recipe
    from medtrain.export import export_checkpoint

    if step == 0:
        return Path(load_recipe(continual / "recipe.yaml").model)
    target = out / "model"
    if (target / "config.json").is_file():
        return target
    ckpt = continual / "checkpoints" / tag_for(step)
    if not (ckpt / "COMPLETE").is_file():
        raise CheckpointError(f"{ckpt}: no complete checkpoint for step {step}; the continual run keeps "
                              f"{sorted(p.name for p in (continual / 'checkpoints').glob('step_*'))}")
    say(f"export {ckpt} -> {target}")
    return export_checkpoint(ckpt, target)


def check_inputs(continual: Path, sft_recipe: Path, checkpoints: list[int], out: Path, data: EvalData,
                 overrides: list[str]) -> None:
    """Everything a sweep will need, checked before the first SFT starts: a typo costs seconds, not a cell."""
    from core.recipe import load_recipe
    from eval.data import mc_subjects, read_cmexam
    from eval.task import TaskError, load_task

    load_recipe(sft_recipe, overrides)
    if not checkpoints:
        raise CheckpointError("--checkpoints names no step; give e.g. 0,750,1500 or 'all'")
    root = continual / "checkpoints"
    missing = [s for s in checkpoints if s and not (root / tag_for(s) / "COMPLETE").is_file()
               and not (out / f"step_{s:06d}" / "model" / "config.json").is_file()]
    if missing:
        have = sorted(int(p.name.removeprefix("step_")) for p in root.glob("step_*") if (p / "COMPLETE").is_file())
        raise CheckpointError(f"{root}: no complete checkpoint for step(s) {', '.join(map(str, missing))}; the run "
                              f"has {', '.join(map(str, have)) or 'none'} (0 is the base model)")
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


def sweep(continual: Path, sft_recipe: Path, checkpoints: list[int], hosts: Path, out: Path, data: EvalData, *,
          launcher: str = "local", overrides: list[str] | None = None, eval_continual: bool = True) -> dict:
    from launch.run import prepare_launch, start

    check_inputs(continual, sft_recipe, checkpoints, out, data, overrides or [])
    out.mkdir(parents=True, exist_ok=True)
    rows, started = [], time.perf_counter()
    for k, step in enumerate(checkpoints):
        elapsed = time.perf_counter() - started
        eta = f", ETA {fmt_seconds(elapsed / k * (len(checkpoints) - k))}" if k else ""
        say(f"cell {k + 1} of {len(checkpoints)}: continual step {step} (elapsed {fmt_seconds(elapsed)}{eta})")
        cell = out / f"step_{step:06d}"
        base = continual_model(continual, step, cell)
        if eval_continual:
            rows.append({"step": step, "sft": False, "model": str(base),
                         "results": evaluate(base, cell / "base", data)})
        sft_dir = cell / "sft"
        if not (sft_dir / "export" / "config.json").is_file():
            say(f"SFT from step {step}: {base}")
            prepared = prepare_launch(sft_recipe, hosts, launcher, overrides=[
                *(overrides or []), f"model={base}", f"output_dir={sft_dir}", f"continual_step={step}"],
                env=[], resume=(sft_dir / "checkpoints").is_dir(), dry_run=False)
            code = start(prepared)
            if code != 0:
                raise RunFailed(f"SFT launch for step {step} exited with {code}; rerun the sweep to resume")
        else:
            say(f"{sft_dir} done, reusing")
        rows.append({"step": step, "sft": True, "model": str(sft_dir / "export"),
                     "results": evaluate(sft_dir / "export", cell / "sft_eval", data)})
    table = table3(rows)
    summary = {"continual": str(continual), "sft_recipe": str(sft_recipe), "checkpoints": checkpoints,
               "rows": [{k: v for k, v in r.items() if k != "results"} | {"metrics": metrics_of(r)} for r in rows]}
    publish_text(out / "table3.md", table)
    publish_json(out / "sweep.json", summary)
    sys.stdout.flush()
    return summary


def metrics_of(row: dict) -> dict:
    from eval.run import paper_columns

    return paper_columns(row["results"])


def lineage_label(model: str) -> str:
    """A row name from the model's lineage: stage, step, and the short hash of the data it saw."""
    path = Path(model) / "lineage.json"
    if not path.is_file():
        return Path(model).name
    lin = json.loads(path.read_text())
    parts = []
    while lin:
        data = lin.get("datasets") or []
        tag = f"{lin.get('stage')}@{lin.get('step')}"
        if data:
            tag += f" [{data[0]['manifest_sha256'][:8]}]"
        parts.append(tag)
        lin = lin.get("base_lineage")
    return " <- ".join(parts)


def table3(rows: list[dict]) -> str:
    from eval.run import PAPER_COLUMNS, paper_cells

    lines = ["| continual steps | SFT | " + " | ".join(PAPER_COLUMNS) + " | lineage |",
             "|---:|:-:|" + "---:|" * len(PAPER_COLUMNS) + "---|"]
    for r in rows:
        cells = paper_cells(r.get("metrics") or metrics_of(r))
        lines.append(f"| {r['step']} | {'yes' if r['sft'] else 'no'} | {cells} | {lineage_label(r['model'])} |")
    return "\n".join(lines) + "\n"
