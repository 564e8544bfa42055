"""lm-evaluation-harness task YAMLs for local MMLU/CMMLU-format files, so the reference implementation can be
run offline on exactly the files `medtrain eval --scoring harness` reads (tests and bench/eval.py use this)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from medtrain.eval.data import mc_subjects
from medtrain.eval.task import load_task

# lm-eval's own prompt functions for the tasks it ships, imported from the installed package, not rewritten
LM_EVAL_FUNCTIONS = {"medqa": ("lm_eval.tasks.medqa.preprocess_medqa", "doc_to_text", "!function {m}.doc_to_target"),
                     "medmcqa": ("lm_eval.tasks.medmcqa.utils_medmcqa", "doc_to_text", "cop")}


def write_harness_tasks(task_name: str, data: Path, out_dir: Path, subjects: list[str] | None = None) -> list[str]:
    """One lm-eval task per subject (named medtrain_{task}_{subject}); returns the task names. A records task
    (MedQA, MedMCQA) is lm-eval's own task definition pointed at the local file."""
    task = load_task(task_name)
    style = task.harness
    data = Path(data).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if task.layout.kind == "records":
        return [_write_records_task(task_name, data / task.layout.test, out_dir)]
    names = []
    for subject in subjects or mc_subjects(task, data):
        files = {split: str(data / getattr(task.layout, split).format(subject=subject)) for split in ("dev", "test")}
        kwargs: dict = {"data_files": files}
        if task.layout.header:
            q, cols = "Question", ["A", "B", "C", "D"]
            target = "{{['A','B','C','D'].index(Answer.strip())}}"
        else:
            kwargs["column_names"] = ["question", "A", "B", "C", "D", "answer"]
            q, cols = "question", ["A", "B", "C", "D"]
            target = "{{['A','B','C','D'].index(answer.strip())}}"
        text = style.question.replace("{question}", "{{" + q + ".strip()}}")
        for c in cols:
            text = text.replace("{" + c + "}", "{{" + c + "}}")
        name = f"medtrain_{task_name}_{subject}"
        spec = {
            "task": name, "dataset_path": "csv", "dataset_kwargs": kwargs, "test_split": "test",
            "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"}, "output_type": "multiple_choice",
            "doc_to_text": text, "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": target,
            "description": style.header.format(subject=task.subject_name(subject)),
            "target_delimiter": " ", "fewshot_delimiter": "\n\n", "metric_list": [{"metric": "acc"}],
        }
        (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
        names.append(name)
    return names


def run_lm_eval(model: Path, task_dir: Path, names: list[str], *, shots: int = 5, batch_size: int = 1,
                limit: int | None = None, log_samples: bool = False) -> dict:
    """EleutherAI's lm-evaluation-harness itself, offline, on the tasks written above (needs `lm-eval`)."""

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    # only the tasks written above: indexing lm-eval's thousands of built-in task files takes ~13 s a call here
    tasks = TaskManager(include_path=str(task_dir), include_defaults=False)
    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32", tasks=names,
                                   num_fewshot=shots, task_manager=tasks, log_samples=log_samples,
                                   batch_size=batch_size, device="cpu", limit=limit)


def _write_records_task(task_name: str, test: Path, out_dir: Path) -> str:
    """lm-eval's medqa_4options / medmcqa task, as it ships (its doc_to_text, choices A-D, target), on a local
    JSON Lines file in the schema lm-eval reads (GBaker's MedQA copy; MedMCQA's Hugging Face copy)."""
    module, text_fn, target = LM_EVAL_FUNCTIONS[task_name]
    helper = f"medtrain_{task_name}_lm_eval"
    (out_dir / f"{helper}.py").write_text(f"from {module} import *  # noqa: F403 (lm-eval's own functions)\n")
    name = f"medtrain_{task_name}_{task_name}"
    target = target.format(m=helper)
    (out_dir / f"{name}.yaml").write_text("\n".join([
        f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {test}",
        "test_split: test", "output_type: multiple_choice", f"doc_to_text: !function {helper}.{text_fn}",
        f"doc_to_target: {target}", "doc_to_choice: ['A', 'B', 'C', 'D']", "metric_list:", "  - metric: acc", ""]))
    return name
