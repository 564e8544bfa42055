"""The launcher: dry runs and refusals in-process; real launches of a probe through `deepspeed`, locally and
over pdsh to two loopback "nodes"."""

import json
import subprocess
from pathlib import Path

import pytest
from train_fixtures import cli, make_tiny_data, small_disk
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.launch.hostfile import read_hostfile
from medtrain.launch.launcher import LaunchSpec, build_command, free_port, launch_environment, write_env_file
from medtrain.launch.slurm import render_sbatch

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "recipes/paper/continual_llama2_13b.yaml"
TINY = REPO / "recipes/tiny/continual.yaml"
PROBE = Path(__file__).resolve().parent / "probe_rank.py"


def _launch(*args):
    return CliRunner().invoke(app, ["launch", *args])


def test_dry_run_shows_20_nodes_by_6_ranks_and_starts_nothing(tmp_path):
    out = tmp_path / "run"
    r = _launch("--hosts", str(REPO / "hostfiles/v100x20"), "--recipe", str(PAPER), "--dry-run",
                "--set", f"output_dir={out}")
    assert r.exit_code == 0, r.output
    assert "20 nodes, 120 ranks" in r.output
    node_lines = [line for line in r.output.splitlines() if line.strip().startswith("node ")]
    assert len(node_lines) == 20 and all("slots=6" in line for line in node_lines)
    assert "ranks 114-119" in node_lines[-1]
    assert "--launcher pdsh --master_addr node01" in r.output
    assert "medtrain train continual --recipe" in r.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("hostfile", "message"),
    [
        ("node01 slots=6\nnode02`id` slots=6\n", ":2: 'node02`id`' is not a valid hostname"),
        ("node01 slots=0\n", ":1: slots=0 must be a positive integer"),
        ("node01 slots=6\nnode01 slots=6\n", ":2: host 'node01' already listed on line 1"),
        ("node01 slots=7\n", "global_batch=120 is not divisible by micro_batch=1 x world_size=7 = 7"),
    ],
)
def test_bad_hostfile_or_batch_exits_2_with_one_line_and_starts_nothing(tmp_path, hostfile, message):
    hosts = tmp_path / "hosts"
    hosts.write_text(hostfile)
    out = tmp_path / "run"
    for extra in (["--dry-run"], []):
        r = _launch("--hosts", str(hosts), "--recipe", str(PAPER), "--set", f"output_dir={out}", *extra)
        assert r.exit_code == 2
        assert message in r.output and len(r.output.strip().splitlines()) == 1
        assert not out.exists()


def test_launch_refuses_unprepared_data_before_starting(tmp_path):
    r = _launch("--hosts", str(REPO / "hostfiles/localhost"), "--recipe", str(TINY), "--launcher", "local",
                "--set", f"data={tmp_path / 'nothing'}", "--set", "expected_samples=64",
                "--set", f"output_dir={tmp_path / 'run'}")
    assert r.exit_code == 2 and "is not a prepared dataset; run `medtrain prep` first" in r.output
    assert not (tmp_path / "run").exists()


def test_local_launcher_needs_a_single_host(tmp_path):
    hosts = tmp_path / "two"
    hosts.write_text("a slots=1\nb slots=1\n")
    r = _launch("--hosts", str(hosts), "--recipe", str(TINY), "--launcher", "local", "--dry-run",
                "--set", "expected_samples=64")
    assert r.exit_code == 2 and "--launcher local runs on this machine only" in r.output


def test_env_values_with_shell_metacharacters_are_refused():
    r = _launch("--hosts", str(REPO / "hostfiles/v100x20"), "--recipe", str(PAPER), "--dry-run",
                "--env", "NCCL_DEBUG=INFO; rm -rf ~")
    assert r.exit_code == 2 and "shell metacharacters" in r.output


def test_slurm_script_asks_for_every_node_and_reads_master_from_the_allocation(tmp_path):
    spec = LaunchSpec(pool=read_hostfile(REPO / "hostfiles/v100x20"), hostfile=REPO / "hostfiles/v100x20",
                      launcher="slurm", entry=["--module", "medtrain", "train", "sft"], run_dir=tmp_path,
                      master_port=29500)
    script = render_sbatch(spec, "medtrain-sft")
    assert "#SBATCH --nodes=20" in script and "#SBATCH --ntasks-per-node=6" in script
    assert "#SBATCH --gres=gpu:6" in script and "#SBATCH --nodelist=node01,node02," in script
    assert "export MASTER_ADDR=" in script and "srun --kill-on-bad-exit=1 --export=ALL" in script
    assert script.rstrip().endswith("-m medtrain train sft"), "srun starts the module itself, --module kept"


def test_openmpi_command_allows_root_when_root(tmp_path):
    import os

    spec = LaunchSpec(pool=read_hostfile(REPO / "hostfiles/v100x20"), hostfile=REPO / "hostfiles/v100x20",
                      launcher="openmpi", entry=["x.py"], run_dir=tmp_path, master_port=29500)
    cmd = build_command(spec)
    assert ("--allow-run-as-root" in " ".join(cmd)) == (os.geteuid() == 0)


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


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> list[str]:
    """--check verifies the data and the tokenizer, so the preflight runs get real ones."""
    tiny = make_tiny_data(tmp_path_factory.mktemp("tiny_check"))
    return ["--set", f"data={tiny['huatuo']}", "--set", f"tokenizer={tiny['tok']}"]


@pytest.mark.launch
def test_preflight_check_over_pdsh_reports_every_host_ok(tmp_path, loopback_cluster, tiny_data):
    r = cli("launch", "--hosts", str(loopback_cluster.hostfile), "--recipe", str(TINY), "--check", *tiny_data,
            "--set", "global_batch=2", "--set", "micro_batch=1", "--set", "expected_samples=16",
            "--set", f"output_dir={tmp_path / 'run'}", "--env", "GLOO_SOCKET_IFNAME=lo", "--timeout", "120",
            env=loopback_cluster.env())
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("127.0.0.")]
    assert len(rows) == 2 and all(line.rstrip().endswith("ok") for line in rows)
    assert "all-reduce over all ranks: ok" in r.stdout and "PREFLIGHT OK" in r.stdout


@pytest.mark.launch
def test_preflight_check_names_an_unreachable_host(tmp_path, loopback_cluster, tiny_data):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.9 slots=1\n127.0.0.2 slots=1\n")  # nothing listens on .9
    r = cli("launch", "--hosts", str(hosts), "--recipe", str(TINY), "--check", *tiny_data, "--set", "global_batch=2",
            "--set", "micro_batch=1", "--set", "expected_samples=16", "--set", f"output_dir={tmp_path / 'run'}",
            "--timeout", "60", env=loopback_cluster.env())
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("127.0.0.9"))
    assert "no rank started" in row and "PREFLIGHT FAILED" in r.stdout
    assert "ssh" in row.split("no rank started", 1)[1], "the launcher's own words for the host, not only a guess"


@pytest.mark.launch
def test_preflight_checks_room_for_the_plans_checkpoints_on_every_host(tmp_path, loopback_cluster, tiny_data):
    with small_disk(tmp_path / "small", "1m") as disk:
        r = cli("launch", "--hosts", str(loopback_cluster.hostfile), "--recipe", str(TINY), "--check", *tiny_data,
                "--set", "global_batch=2", "--set", "micro_batch=1", "--set", "expected_samples=16",
                "--set", f"output_dir={disk / 'run'}", "--env", "GLOO_SOCKET_IFNAME=lo", "--timeout", "120",
                env=loopback_cluster.env())
    assert r.returncode == 1, r.stdout + r.stderr
    assert "of room in" in r.stdout  # the header says what is checked
    rows = [line for line in r.stdout.splitlines() if line.startswith("127.0.0.")]
    assert len(rows) == 2 and all("GiB free here, the plan writes" in line for line in rows), r.stdout
    assert "all-reduce over all ranks: ok" in r.stdout and "PREFLIGHT FAILED" in r.stdout


def test_host_checks_name_what_is_missing_different_or_short_of_room(tmp_path, tiny_data):
    import shutil

    from medtrain.core.recipe import load_recipe
    from medtrain.launch.host_checks import check_host, decode, encode, expectations

    sets = [x for x in tiny_data if x != "--set"]
    recipe = load_recipe(TINY, [*sets, f"output_dir={tmp_path / 'run'}"])
    expect = decode(encode(expectations(recipe, disk_bytes=1000)))  # as the ranks receive it
    assert set(expect["paths"]) == {"data", "tokenizer"}  # init: random: no model directory to compare
    assert check_host(expect) == []

    data, tok = Path(expect["paths"]["data"]["path"]), Path(expect["paths"]["tokenizer"]["path"])
    other_data, other_tok = tmp_path / "data", tmp_path / "tok"
    shutil.copytree(data, other_data)
    shutil.copytree(tok, other_tok)
    expect["paths"]["data"]["path"], expect["paths"]["tokenizer"]["path"] = str(other_data), str(other_tok)
    assert check_host(expect) == [], "a copy elsewhere is the same data and tokenizer"

    (other_data / "manifest.json").write_text((data / "manifest.json").read_text().replace("{", "{ ", 1))
    raw = json.loads((other_tok / "tokenizer.json").read_text())
    raw["model"]["vocab"]["zzz-not-in-the-original"] = len(raw["model"]["vocab"])
    (other_tok / "tokenizer.json").write_text(json.dumps(raw))
    expect["output"]["bytes"] = 2**60
    problems = check_host(expect)
    assert problems[0] == f"data {other_data} differs from the launching host's"
    assert problems[1] == f"tokenizer {other_tok} differs from the launching host's"
    assert "GiB free here, the plan writes 1073741824.0 GiB" in problems[2]

    shutil.rmtree(other_data)
    assert check_host(expect)[0] == f"data {other_data} missing here"

    from medtrain.core.recipe import RecipeError

    with pytest.raises(RecipeError, match="model '.*no-such-model' is not a directory on this machine"):
        expectations(load_recipe(TINY, [*sets, "init=pretrained", f"model={tmp_path / 'no-such-model'}"]), 0)


def test_the_plan_sizes_a_checkpoint_as_the_trainer_writes_it(continual_run):
    """The room --check asks for comes from the plan: its checkpoint size against a real ZeRO-3 checkpoint."""
    from medtrain.core.recipe import load_recipe
    from medtrain.launch.plan import make_plan

    world = json.loads((continual_run / "run_spec.json").read_text())["world_size"]
    plan = make_plan(load_recipe(continual_run / "recipe.yaml"), {"localhost": world})
    newest = sorted((continual_run / "checkpoints").glob("step_*"))[-1]
    written = sum(f.stat().st_size for f in newest.iterdir())
    assert 0.9 < written / plan.checkpoint_bytes < 1.1, (written, plan.checkpoint_bytes)
