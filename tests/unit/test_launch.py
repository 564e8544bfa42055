"""The launcher in-process: dry runs, refusals, the launch commands and environments, the sbatch script."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.launch.hostfile import read_hostfile
from medtrain.launch.launcher import LaunchSpec, build_command
from medtrain.launch.slurm import render_sbatch

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "recipes/paper/continual_llama2_13b.yaml"
TINY = REPO / "recipes/tiny/continual.yaml"


def _launch(*args):
    return CliRunner().invoke(app, ["launch", *args])


def test_dry_run_shows_20_nodes_by_6_ranks_and_starts_nothing(tmp_path, tiny_sets):
    out = tmp_path / "run"
    r = _launch("--hosts", str(REPO / "hostfiles/v100x20"), "--recipe", str(PAPER), "--dry-run",
                "--set", f"output_dir={out}", *tiny_sets)
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


def test_the_same_host_problem_on_many_hosts_is_one_line_naming_them():
    from medtrain.launch.preflight import HostReport, Preflight

    hosts = [HostReport(f"node{i:02d}", 6, problems=[f"no rank started (ssh: connect to host node{i:02d} port 22: "
                                                      "Connection refused)"]) for i in range(1, 21)]
    hosts[0].problems.append("torch 2.10 != 2.13 here")
    text = Preflight(hosts, allreduce_ok=False, returncode=1, reference={}).render()
    grouped = [line for line in text.splitlines() if line.startswith("[")]
    assert len(grouped) == 2, text
    assert "connect to host <host> port 22: Connection refused) — 20 host(s): node01, node02" in grouped[0]
    assert grouped[0].endswith("and 12 more") and grouped[1].endswith("1 host(s): node01")
    assert text.splitlines()[1].rstrip().endswith("[1] [2]")


def test_preflight_reports_each_hosts_gpus_and_refuses_a_build_without_their_kernels(monkeypatch):
    """What each host's first rank reports (preflight_rank.host_problems, fed the device facts a V100 host with
    PyPI's CUDA 13 torch would give), grouped into one line for all such hosts with the fix."""
    from medtrain.core.gpu_build import DeviceFacts, Gpu
    from medtrain.launch.host_checks import ENV, encode
    from medtrain.launch.preflight import HostReport, Preflight
    from medtrain.launch.preflight_rank import host_problems

    v100 = DeviceFacts("2.11.0", "13.0", ("sm_75", "sm_80", "sm_90", "sm_100", "sm_120"),
                       (Gpu("Tesla V100-SXM2-32GB", (7, 0)),) * 6)
    monkeypatch.setenv(ENV, encode({"precision": "fp16", "wants_gpu": True}))
    problems = host_problems({"local_rank": 0, "device": v100.to_dict()})
    assert len(problems) == 1 and "no kernels in torch 2.11.0 (CUDA 13.0" in problems[0] and "cu126" in problems[0]
    assert host_problems({"local_rank": 3, "device": v100.to_dict()}) == []  # each host's first rank only
    hosts = [HostReport(f"node{i:02d}", 6, ranks=[{"device": v100.to_dict()}], problems=list(problems))
             for i in range(1, 4)]
    text = Preflight(hosts, allreduce_ok=True, returncode=0, reference={}).render()
    assert "6 x Tesla V100-SXM2-32GB (7.0); torch 2.11.0, CUDA 13.0 [sm_75" in text.splitlines()[1]
    assert [line for line in text.splitlines() if line.startswith("[1]")][0].endswith("3 host(s): node01, node02, "
                                                                                      "node03")
    assert text.endswith("PREFLIGHT FAILED")
