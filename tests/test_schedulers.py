"""Launches through the schedulers' own starters: a real mpirun (Open MPI) on this machine."""

from __future__ import annotations

import shutil

import pytest
from cluster import need
from train_fixtures import CONT_RECIPE, CONTINUAL, check, cli, launch_args

from medtrain.metrics import read_metrics


@pytest.mark.launch
def test_openmpi_launch_runs_the_tiny_recipe_through_mpirun(tiny, continual_run, tmp_path):
    if shutil.which("mpirun") is None:
        need("openmpi-bin (mpirun)", "apt-get install -y openmpi-bin (make test does it as root)")
    out = tmp_path / "mpi"
    proc = check(cli(*launch_args(CONT_RECIPE, tiny, out, "--set", f"data={tiny['huatuo']}", *CONTINUAL,
                                  launcher="openmpi")))
    command = next(line for line in proc.stdout.splitlines() if "--launcher openmpi" in line)
    assert "'--launcher_args=--allow-run-as-root" in command or "--launcher_args=" in command
    assert "--no_ssh_check" in command and "--force_multi" in command and "btl_tcp_if_include lo" in command
    assert "MASTER_ADDR=127.0.0.1" in proc.stdout, "mpirun's ranks get the rendezvous address (-x)"
    got = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    want = [r["loss"] for r in read_metrics(continual_run / "metrics.jsonl")]
    assert len(got) == len(want) == 12
    worst = max(abs(a - b) for a, b in zip(got, want, strict=True))
    print(f"FIGURE openmpi vs local launcher: max |loss difference| over 12 steps = {worst:.2g}")
    assert worst <= 1e-5, (got, want)
    assert (out / "export" / "model.safetensors").is_file()
