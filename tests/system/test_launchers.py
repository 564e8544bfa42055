"""Real launches of a probe rank through `deepspeed`, locally and over pdsh to two loopback "nodes", and --check's
preflight over them."""

import json
import subprocess
from pathlib import Path

import pytest
from train_fixtures import cli, small_disk

from medtrain.launch.hostfile import read_hostfile
from medtrain.launch.launcher import LaunchSpec, build_command, free_port, launch_environment, write_env_file

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes/tiny/continual.yaml"
PROBE = Path(__file__).resolve().parents[1] / "probe_rank.py"


def _probe_spec(pool_file: Path, launcher: str, tmp_path: Path, env=None) -> tuple[LaunchSpec, Path]:
    out = tmp_path / "reports"
    out.mkdir()
    spec = LaunchSpec(pool=read_hostfile(pool_file), hostfile=pool_file, launcher=launcher,
                      entry=["--no_local_rank", str(PROBE), str(out)], run_dir=tmp_path / "run",
                      master_port=free_port(), env=env or {})
    write_env_file(spec)
    return spec, out


def _reports(out: Path, world: int) -> list[dict]:
    reports = sorted((json.loads(p.read_text()) for p in out.glob("rank*.json")), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == list(range(world))
    assert all(r["world_size"] == world and r["allreduce"] == world * (world - 1) / 2 for r in reports)
    return reports


@pytest.mark.launch
def test_local_launcher_starts_two_ranks_that_all_reduce_and_exit_cleanly(tmp_path):
    spec, out = _probe_spec(REPO / "hostfiles/localhost", "local", tmp_path)
    proc = subprocess.run(build_command(spec), env=launch_environment(spec), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "terminate called without an active exception" not in proc.stdout + proc.stderr
    reports = _reports(out, 2)
    assert [r["local_rank"] for r in reports] == [0, 1]


@pytest.mark.launch
def test_pdsh_launcher_reaches_two_loopback_nodes_over_ssh(tmp_path, loopback_cluster):
    spec, out = _probe_spec(loopback_cluster.hostfile, "pdsh", tmp_path, env={"GLOO_SOCKET_IFNAME": "lo"})
    env = launch_environment(spec)
    env["PATH"] = f"{loopback_cluster.bin_dir}:{env['PATH']}"
    proc = subprocess.run(build_command(spec), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "terminate called without an active exception" not in proc.stdout + proc.stderr
    reports = _reports(out, 2)
    assert [(r["node_rank"], r["local_rank"]) for r in reports] == [(0, 0), (1, 0)]
    assert {r["master_addr"] for r in reports} == {"127.0.0.2"}
    assert {r["gloo_ifname"] for r in reports} == {"lo"}  # carried by .deepspeed_env through ssh


@pytest.mark.launch
def test_preflight_check_over_pdsh_reports_every_host_ok(tmp_path, loopback_cluster, tiny_sets):
    r = cli("launch", "--hosts", str(loopback_cluster.hostfile), "--recipe", str(TINY), "--check", *tiny_sets,
            "--set", "global_batch=2", "--set", "micro_batch=1", "--set", "expected_samples=16",
            "--set", f"output_dir={tmp_path / 'run'}", "--env", "GLOO_SOCKET_IFNAME=lo", "--timeout", "120",
            env=loopback_cluster.env())
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("127.0.0.")]
    assert len(rows) == 2 and all(line.rstrip().endswith("ok") for line in rows)
    assert "all-reduce over all ranks: ok" in r.stdout and "PREFLIGHT OK" in r.stdout


@pytest.mark.launch
def test_preflight_check_names_an_unreachable_host(tmp_path, loopback_cluster, tiny_sets):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.9 slots=1\n127.0.0.2 slots=1\n")  # nothing listens on .9
    r = cli("launch", "--hosts", str(hosts), "--recipe", str(TINY), "--check", *tiny_sets, "--set", "global_batch=2",
            "--set", "micro_batch=1", "--set", "expected_samples=16", "--set", f"output_dir={tmp_path / 'run'}",
            "--timeout", "60", env=loopback_cluster.env())
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("127.0.0.9"))
    [said] = [line for line in r.stdout.splitlines() if line.startswith(row.split()[-1] + " ")]  # "[1] ..."
    assert "no rank started" in said and "1 host(s): 127.0.0.9" in said and "PREFLIGHT FAILED" in r.stdout
    assert "ssh" in said.split("no rank started", 1)[1], "the launcher's own words for the host, not only a guess"


@pytest.mark.launch
def test_preflight_checks_room_for_the_plans_checkpoints_on_every_host(tmp_path, loopback_cluster, tiny_sets):
    with small_disk(tmp_path / "small", "1m") as disk:
        r = cli("launch", "--hosts", str(loopback_cluster.hostfile), "--recipe", str(TINY), "--check", *tiny_sets,
                "--set", "global_batch=2", "--set", "micro_batch=1", "--set", "expected_samples=16",
                "--set", f"output_dir={disk / 'run'}", "--env", "GLOO_SOCKET_IFNAME=lo", "--timeout", "120",
                env=loopback_cluster.env())
    assert r.returncode == 1, r.stdout + r.stderr
    assert "of room in" in r.stdout  # the header says what is checked
    rows = [line for line in r.stdout.splitlines() if line.startswith("127.0.0.")]
    said = [line for line in r.stdout.splitlines() if "GiB free here, the plan writes" in line]
    keys = {line.split()[0] for line in said}  # "[1]": the rows point to the grouped lines, said once each
    assert len(rows) == 2 and all(row.split()[-1] in keys for row in rows), r.stdout
    assert sum(int(line.split(" host(s)")[0].split()[-1]) for line in said) == 2, said
    assert "all-reduce over all ranks: ok" in r.stdout and "PREFLIGHT FAILED" in r.stdout


def test_the_plan_sizes_a_checkpoint_as_the_trainer_writes_it(continual_run):
    """The room --check asks for comes from the plan: its checkpoint size against a real ZeRO-3 checkpoint."""
    from medtrain.core.recipe import load_recipe
    from medtrain.launch.plan import make_plan

    world = json.loads((continual_run / "run_spec.json").read_text())["world_size"]
    plan = make_plan(load_recipe(continual_run / "recipe.yaml"), {"localhost": world})
    newest = sorted((continual_run / "checkpoints").glob("step_*"))[-1]
    written = sum(f.stat().st_size for f in newest.iterdir())
    assert 0.9 < written / plan.checkpoint_bytes < 1.1, (written, plan.checkpoint_bytes)
