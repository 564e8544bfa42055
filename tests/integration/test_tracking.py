"""Experiment tracking for real: rank 0's MetricsLogger against a local `mlflow server` (SQLite store, loopback)
read back with MlflowClient, W&B and SwanLab in their offline modes read back from their run files; a resumed run
continuing the same tracking run; a tracker missing or unreachable being one warning while the records go on."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from medtrain.train.loss_curve import plot_loss
from medtrain.train.metrics import MetricsLogger

BIN = Path(sys.executable).parent


def _records(steps, start=1):
    return [{"step": s, "total_steps": 6, "loss": 5.0 - 0.5 * s, "lr": 1e-3 * s, "grad_norm": 1.0,
             "tokens_per_s": 100.0 * s, "samples_per_s": 2.0, "data_wait_frac": 0.0, "elapsed_s": float(s),
             "eta_s": 6.0 - s} | ({"val_loss": 4.0 - 0.1 * s, "val_tokens": 300} if s % 2 == 0 else {})
            for s in range(start, steps + 1)]


def _leveldb_log(blob: bytes, magic: bytes):
    """The records of a W&B run file: a 7-byte header (magic, 0xBEE1, version), then 32 KiB blocks of records,
    each with a 7-byte header (CRC, length, type: 1 full, 2 first, 3 middle, 4 last); W&B 0.31 ships no Python
    reader for it."""
    assert blob[:4] == magic
    pos, block, part = 7, 32768, b""
    while pos + 7 <= len(blob):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(blob[pos + 4:pos + 6], "little"), blob[pos + 6]
        data, pos = blob[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):
            yield part


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root",
                             str(root / "artifacts"), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start in 120 s")
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def _log(run_dir, records, report_to, params=None, finished=False):
    """What the trainer does on rank 0: log each step, and at the end of a finished run hand over the loss
    curve and the run's records (Trainer.cleanup)."""
    logger = MetricsLogger(run_dir, True, report_to, params or {"lr": 1e-3, "stage": "continual"})
    for r in records:
        logger.log(r)
    artifacts = [plot_loss([run_dir], run_dir / "loss_curve.png"), run_dir / "metrics.jsonl",
                 run_dir / "recipe.yaml"] if finished else []
    logger.close(artifacts)
    return logger


def test_mlflow_gets_the_records_of_metrics_jsonl_the_recipe_and_the_artifacts(tmp_path, mlflow_server,
                                                                                 monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "medtrain-test")
    run_dir = tmp_path / "continual"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("stage: continual\n")
    _log(run_dir, _records(3), ["tensorboard", "mlflow"])
    first = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    _log(run_dir, _records(6, start=4), ["tensorboard", "mlflow"], finished=True)  # resumed: the same run
    assert json.loads((run_dir / "tracking.json").read_text())["mlflow"] == first
    client = MlflowClient(mlflow_server)
    run = client.get_run(first)
    assert run.info.run_name == "continual" and run.data.params["lr"] == "0.001"
    expected = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m.step, m.value) for m in client.get_metric_history(first, "train/loss")] == \
        [(r["step"], r["loss"]) for r in expected]
    assert [(m.step, m.value) for m in client.get_metric_history(first, "val/loss")] == \
        [(r["step"], r["val_loss"]) for r in expected if "val_loss" in r]
    names = {a.path for a in client.list_artifacts(first)}
    assert {"loss_curve.png", "metrics.jsonl", "recipe.yaml"} <= names
    assert client.get_experiment(run.info.experiment_id).name == "medtrain-test"


def test_wandb_and_swanlab_offline_runs_hold_the_records(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "sft"
    _log(run_dir, _records(4), ["wandb", "swanlab"])
    assert not (run_dir / "tensorboard").exists()  # report_to without tensorboard: none written
    ids = json.loads((run_dir / "tracking.json").read_text())
    assert set(ids) == {"wandb", "swanlab"}

    from wandb.proto import wandb_internal_pb2

    losses = []
    path = next(run_dir.glob(f"wandb/offline-run-*-{ids['wandb']}/run-{ids['wandb']}.wandb"))
    for data in _leveldb_log(path.read_bytes(), b":W&B"):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            items = {i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in record.history.item}
            if "train/loss" in items:
                losses.append((items["_step"], items["train/loss"]))
    assert losses == [(r["step"], r["loss"]) for r in _records(4)]

    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    reader = DataStoreReader()
    reader.open(str(next(run_dir.glob(f"swanlog/run-*-{ids['swanlab']}/run-{ids['swanlab']}.swanlab"))))
    scalars = []
    for data in reader:
        rec = Record()
        rec.ParseFromString(data)
        if rec.HasField("scalar") and rec.scalar.key == "train/loss":
            scalars.append(rec.scalar.step)
    assert scalars == [1, 2, 3, 4]


def test_a_tracker_missing_or_unreachable_is_one_warning_and_the_records_go_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    monkeypatch.setitem(sys.modules, "swanlab", None)  # as if not installed
    run_dir = tmp_path / "r"
    logger = _log(run_dir, _records(2), ["tensorboard", "mlflow", "swanlab"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("report_to mlflow: could not start" in w and "training goes on" in w for w in warnings)
    assert any("pip install 'medtrain[swanlab]'" in w for w in warnings)
    assert logger.trackers.live == [] and len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert any((run_dir / "tensorboard").iterdir())
