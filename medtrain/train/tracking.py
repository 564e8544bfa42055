"""Experiment tracking servers beside TensorBoard: MLflow, Weights & Biases, SwanLab, each through its own library
and its own settings (MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME; WANDB_PROJECT / WANDB_MODE; SWANLAB_PROJECT /
SWANLAB_MODE), on rank 0 only.

Every tracker gets the records metrics.jsonl gets, under TensorBoard's tag names (`train/loss`, `val/loss`, ...),
the recipe as parameters, the run directory's name as the run's name, and at the end the loss curve and the run's
record files as artifacts. Its run id is kept in RUN_DIR/tracking.json, so a resumed run continues the same
tracking run. A tracker asked for but not installed, or whose server cannot be reached, is one warning, and
training goes on without it: a run of three weeks does not stop for a dashboard."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from medtrain.core.log import get_logger
from medtrain.core.publish import publish_json

log = get_logger(__name__)

TRACKERS = ("tensorboard", "mlflow", "wandb", "swanlab")
IDS_FILE = "tracking.json"


def tag(key: str) -> str:
    """A record key as TensorBoard and every tracker name it: val_loss -> val/loss, loss -> train/loss."""
    return f"val/{key.removeprefix('val_')}" if key.startswith("val_") else f"train/{key}"


def scalars(record: dict) -> dict[str, float]:
    return {tag(k): float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


def _params(recipe: dict) -> dict[str, Any]:
    """The recipe flattened to parameters (nested keys joined by dots)."""
    flat: dict[str, Any] = {}
    for key, value in recipe.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _params(value).items()})
        else:
            flat[key] = value
    return flat


class MlflowTracker:
    name = "mlflow"

    def __init__(self, run_dir: Path, params: dict, run_id: str | None):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a server gone mid-run costs seconds, not hours
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        import mlflow

        uri = mlflow.get_tracking_uri()
        if uri.startswith(("http://", "https://")):
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).close()  # unreachable: raise here
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_dir.name)
        if run_id is None:
            mlflow.log_params({k: str(v)[:6000] for k, v in _params(params).items()})
        self.id = self.run.info.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.mlflow.log_artifact(str(path))

    def close(self) -> None:
        self.mlflow.end_run()


class WandbTracker:
    name = "wandb"

    def __init__(self, run_dir: Path, params: dict, run_id: str | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "medtrain"), name=run_dir.name, id=run_id,
                              resume="allow", config=params, dir=str(run_dir))
        self.id = self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def artifacts(self, paths: list[Path]) -> None:
        artifact = self.wandb.Artifact(f"{self.run.name}-records", type="run-records")
        for path in paths:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        self.run.finish()


class SwanlabTracker:
    name = "swanlab"

    def __init__(self, run_dir: Path, params: dict, run_id: str | None):
        import swanlab

        self.swanlab = swanlab
        self.run = swanlab.init(project=os.environ.get("SWANLAB_PROJECT", "medtrain"), name=run_dir.name, id=run_id,
                                resume="allow" if run_id else None, config=params,
                                log_dir=str(run_dir / "swanlog"), mode=os.environ.get("SWANLAB_MODE") or None)
        self.id = self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.swanlab.log(metrics, step=step)

    def artifacts(self, paths: list[Path]) -> None:
        self.swanlab.save([str(p) for p in paths])

    def close(self) -> None:
        self.swanlab.finish()


KINDS = {"mlflow": MlflowTracker, "wandb": WandbTracker, "swanlab": SwanlabTracker}


class Trackers:
    """The trackers a recipe's `report_to` asks for beside TensorBoard; a call that fails warns once and drops
    that tracker for the rest of the run."""

    def __init__(self, report_to: list[str], run_dir: Path, params: dict):
        self.run_dir, self.live = run_dir, []
        ids_path = run_dir / IDS_FILE
        ids = json.loads(ids_path.read_text(encoding="utf-8")) if ids_path.is_file() else {}
        for name in report_to:
            if name in KINDS:
                self._start(name, params, ids.get(name))
        if self.live:
            publish_json(ids_path, ids | {t.name: t.id for t in self.live})

    def _start(self, name: str, params: dict, run_id: str | None) -> None:
        try:
            self.live.append(KINDS[name](self.run_dir, params, run_id))
            log.info(f"medtrain: tracking with {name}" + (f" (continuing run {run_id})" if run_id else ""))
        except ImportError:
            log.warning(f"warning: report_to asks for {name}, which is not installed (pip install "
                        f"'medtrain[{name}]'); training goes on without it")
        except Exception as e:  # an unreachable server, a login missing: the run goes on
            log.warning(f"warning: report_to {name}: could not start ({type(e).__name__}: {str(e)[:200]}); "
                        "training goes on without it")

    def _each(self, what: str, call) -> None:
        for tracker in list(self.live):
            try:
                call(tracker)
            except Exception as e:
                log.warning(f"warning: {tracker.name}: {what} failed ({type(e).__name__}: {str(e)[:200]}); no more "
                            f"records go to {tracker.name} in this run")
                self.live.remove(tracker)

    def log(self, record: dict) -> None:
        metrics = scalars(record)
        self._each("logging", lambda t: t.log(metrics, int(record["step"])))

    def finish(self, artifacts: list[Path]) -> None:
        found = [p for p in artifacts if p.is_file()]
        if found:
            self._each("uploading artifacts", lambda t: t.artifacts(found))
        self._each("closing", lambda t: t.close())
        self.live = []
