"""Launches through the schedulers' own starters: a real mpirun (Open MPI) on this machine, and sbatch/srun on a
throwaway Slurm cluster (munged, slurmctld, two slurmd)."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from cluster import need
from train_fixtures import CONT_RECIPE, CONTINUAL, check, cli, launch_args

from medtrain.train.metrics import read_metrics


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


def slurm_args(tiny: dict, out, *extra: str) -> list[str]:
    return ["launch", "--launcher", "slurm", "--recipe", CONT_RECIPE, "--set", f"tokenizer={tiny['tok']}",
            "--set", f"output_dir={out}", "--set", f"data={tiny['huatuo']}", *CONTINUAL, *extra]


@pytest.mark.launch
def test_slurm_runs_the_tiny_recipe_on_two_nodes_and_returns_the_jobs_exit_code(tiny, continual_run, tmp_path,
                                                                                slurm_cluster):
    out = tmp_path / "slurm"
    proc = check(cli(*slurm_args(tiny, out, "--nodes", "2", "--gpus-per-node", "1"), env=slurm_cluster.env()))
    assert "submitted batch job" in proc.stdout and "exported" in proc.stdout, "the job's log is streamed"
    job = proc.stdout.split("submitted batch job ")[1].split(";")[0]
    shown = slurm_cluster.run("scontrol", "show", "job", "-o", job).stdout
    assert "JobState=COMPLETED" in shown and "NumNodes=2" in shown and "NodeList=n[1-2]" in shown
    got = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    want = [r["loss"] for r in read_metrics(continual_run / "metrics.jsonl")]
    worst = max(abs(a - b) for a, b in zip(got, want, strict=True))
    print(f"FIGURE slurm (2 nodes) vs local launcher: max |loss difference| over 12 steps = {worst:.2g}")
    assert len(got) == 12 and worst <= 1e-5
    assert (out / "export" / "model.safetensors").is_file()

    failing = cli(*slurm_args(tiny, tmp_path / "failing", "--nodes", "2", "--gpus-per-node", "1", "--set",
                              "attn_implementation=bogus"), env=slurm_cluster.env())
    assert failing.returncode == 1, failing.stdout[-2000:] + failing.stderr[-2000:]
    assert "attn_implementation" in failing.stdout and "restart budget 0 spent" in failing.stdout


@pytest.mark.launch
def test_a_job_that_can_never_start_is_reported_and_detach_returns_the_job_id(tiny, tmp_path, slurm_cluster):
    never = cli(*slurm_args(tiny, tmp_path / "never", "--nodes", "2", "--gpus-per-node", "1", "--partition",
                            "small"), env=slurm_cluster.env(), timeout=120)
    assert never.returncode == 2 and "can never start (Partition" in never.stderr, never.stderr
    queue = slurm_cluster.run("squeue", "-h", "-o", "%i %T").stdout
    assert "PENDING" not in queue, "the hopeless job was cancelled"
    detached = check(cli(*slurm_args(tiny, tmp_path / "detached", "--nodes", "2", "--gpus-per-node", "1",
                                     "--partition", "small", "--detach"), env=slurm_cluster.env()))
    job = detached.stdout.split("submitted batch job ")[1].split(";")[0]
    assert job.isdigit()
    status = cli("status", str(tmp_path / "detached"), env=slurm_cluster.env())  # Slurm itself asked
    assert status.returncode == 3 and f"QUEUED — Slurm job {job} is pending" in status.stdout, status.stdout
    assert f"slurm       job {job}: PENDING" in status.stdout
    slurm_cluster.run("scancel", job)


@pytest.mark.launch
def test_check_under_slurm_runs_the_preflight_as_a_short_job_of_the_same_shape(tiny, tmp_path, slurm_cluster):
    proc = check(cli(*slurm_args(tiny, tmp_path / "check", "--nodes", "2", "--gpus-per-node", "1", "--check"),
                     env=slurm_cluster.env()))
    assert "PREFLIGHT OK" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("node")]
    assert len(rows) == 2 and all(" 1/1 " in row and row.endswith("ok") for row in rows), proc.stdout


@pytest.mark.launch
def test_a_run_longer_than_the_time_limit_finishes_across_jobs_with_the_uninterrupted_losses(tiny, tmp_path,
                                                                                              slurm_cluster):
    """--time 1 (a minute; Slurm's smallest) and a run whose training alone outlasts a job: Slurm warns each job
    30 s before its limit, every rank saves and stops, the next job resumes there, until the run is done. Slurm
    may send the warning up to a minute early or, checking every 30 s, let a shorter job end first: 100 steps at
    seq_len 64 trained in 19 s, and one job of 26 s finished the run unwarned. 300 steps at seq_len 192 train for
    about 70 s under Slurm; the uninterrupted reference runs under Slurm too (one thread per rank there, about 3x
    the local launcher's speed on this 2-core machine)."""
    longer = ("--set", "seq_len=192", "--set", "epochs=40", "--set", "max_steps=300", "--set", "checkpoint_every=50")
    reference = tmp_path / "uninterrupted"
    check(cli(*slurm_args(tiny, reference, *longer, "--nodes", "2", "--gpus-per-node", "1"), env=slurm_cluster.env(),
              timeout=1200))
    out = tmp_path / "limited"
    proc = check(cli(*slurm_args(tiny, out, *longer, "--nodes", "2", "--gpus-per-node", "1", "--time", "1",
                                 "--time-warning", "30", "--max-restarts", "8"), env=slurm_cluster.env(),
                     timeout=1200))
    script = (out / "launch.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@30" in script and "kill -USR2" in script
    records = [json.loads(line) for line in (out / "restarts.jsonl").read_text().splitlines()]
    assert records and all(r["cause"]["kind"] == "time_limit" for r in records), records
    resumed = [line for line in proc.stdout.splitlines() if line.startswith("medtrain: Slurm ended job")]
    assert len(resumed) == len(records) and all("resuming from step" in line for line in resumed), proc.stdout[-3000:]
    got, want = read_metrics(out / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want] and len(want) == 300
    worst = max(abs(a["loss"] - b["loss"]) for a, b in zip(got, want, strict=True))
    print(f"FIGURE slurm --time 1: {len(records) + 1} jobs for 300 steps; max |loss difference| vs uninterrupted "
          f"= {worst:.2g}; resumed at steps {[r['resume_step'] for r in records]}")
    assert worst <= 1e-5
    assert (out / "export" / "model.safetensors").is_file()
    detached_run_heals_itself(tiny, tmp_path / "detached", longer, want, slurm_cluster)


def detached_run_heals_itself(tiny, out, longer, want, slurm_cluster) -> None:
    """The same run `--detach`ed (120 of the 300 steps: their losses are the reference's, the schedule spans the
    epochs): nobody waits to resubmit, so the job asks for --requeue, saves at the warning, requeues itself and
    comes back resuming (SLURM_RESTART_COUNT), until done; `status` follows it and lists each requeue."""
    check(cli(*slurm_args(tiny, out, *longer, "--set", "max_steps=120", "--nodes", "2", "--gpus-per-node", "1",
                          "--time", "1", "--time-warning", "30", "--max-restarts", "4", "--detach"),
              env=slurm_cluster.env()))
    script = (out / "launch.sbatch").read_text()
    assert "#SBATCH --requeue" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    deadline = time.time() + 900
    while time.time() < deadline:
        status = cli("status", str(out), env=slurm_cluster.env())
        if status.returncode not in (3, 4):
            break
        time.sleep(5)
    logs = "".join(p.read_text()[-2000:] for p in sorted(out.glob("slurm-*.out")))
    assert status.returncode == 0, status.stdout + logs
    records = [json.loads(line) for line in (out / "restarts.jsonl").read_text().splitlines()]
    assert records and all(r["action"] == "requeued" for r in records), records
    assert f"restarts    {len(records)}: Slurm warned job" in status.stdout and "FINISHED" in status.stdout
    got = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 121))
    worst = max(abs(a["loss"] - b["loss"]) for a, b in zip(got, want[:120], strict=True))
    print(f"FIGURE slurm --detach --time 1: {len(records) + 1} jobs (requeued at steps "
          f"{[r['reached_step'] for r in records]}) for 120 steps; max |loss difference| vs uninterrupted "
          f"{worst:.2g}")
    assert worst <= 1e-5 and (out / "export" / "model.safetensors").is_file()
