"""The sbatch script medtrain writes for a real prepared run: what srun needs is exported, GPUs are asked for only
on GPU presets, and unsafe Slurm values are refused."""

from __future__ import annotations

from train_fixtures import CONT_RECIPE, CONTINUAL, check, cli


def slurm_args(tiny: dict, out, *extra: str) -> list[str]:
    return ["launch", "--launcher", "slurm", "--recipe", CONT_RECIPE, "--set", f"tokenizer={tiny['tok']}",
            "--set", f"output_dir={out}", "--set", f"data={tiny['huatuo']}", *CONTINUAL, *extra]


def test_the_sbatch_script_exports_what_srun_needs_and_asks_for_gpus_only_on_gpu_presets(tiny, tmp_path):
    cpu = check(cli(*slurm_args(tiny, tmp_path / "a", "--nodes", "2", "--gpus-per-node", "1", "--partition",
                                "debug", "--time", "01:00:00", "--sbatch-arg=--exclusive", "--dry-run"))).stdout
    assert "#SBATCH --nodes=2" in cpu and "#SBATCH --ntasks-per-node=1" in cpu and "--gres" not in cpu
    assert "#SBATCH --partition=debug" in cpu and "#SBATCH --time=01:00:00" in cpu and "#SBATCH --exclusive" in cpu
    assert "NodeAddr" in cpu and "export MASTER_PORT=" in cpu and "export OMP_NUM_THREADS" in cpu
    assert "srun --kill-on-bad-exit=1" in cpu and "-m medtrain train continual" in cpu
    assert "--nodelist" not in cpu, "--nodes names no hosts"
    local = check(cli(*slurm_args(tiny, tmp_path / "l", "--hosts", "hostfiles/localhost", "--dry-run"))).stdout
    assert "#SBATCH --nodes=1" in local and "#SBATCH --ntasks-per-node=2" in local and "--nodelist" not in local
    gpu = check(cli(*slurm_args(tiny, tmp_path / "b", "--hosts", "hostfiles/v100x20", "--set",
                                "preset=v100-zero3-fp16", "--set", "precision=fp16", "--set", "global_batch=120",
                                "--set", "micro_batch=1", "--dry-run"))).stdout
    assert "#SBATCH --gres=gpu:6" in gpu and "#SBATCH --nodes=20" in gpu and "--nodelist=node01," in gpu
    bad = cli(*slurm_args(tiny, tmp_path / "c", "--nodes", "1", "--gpus-per-node", "2", "--partition", "a;b",
                          "--dry-run"))
    assert bad.returncode == 2 and "--partition 'a;b'" in bad.stderr
