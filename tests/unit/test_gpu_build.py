"""The GPU and the torch build checked against each other, with the device facts injected: the paper's V100s on
PyPI's default CUDA 13 build and on PyTorch's CUDA 12.6 build, an A100, an H100, a T4, and a CPU machine."""

import pytest

from medtrain.core.environment import environment_problems
from medtrain.core.gpu_build import (
    V100_FIX,
    DeviceFacts,
    Gpu,
    attention_kernel,
    auto_dtype,
    has_kernels,
    runtime_problems,
)

# torch.cuda.get_arch_list() of PyTorch's own wheels (2.11: cu130 from PyPI, cu126 from download.pytorch.org)
CU130 = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120")
CU126 = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")
V100, A100, H100, T4 = (Gpu("Tesla V100-SXM2-32GB", (7, 0)), Gpu("NVIDIA A100-SXM4-80GB", (8, 0)),
                        Gpu("NVIDIA H100 80GB HBM3", (9, 0)), Gpu("Tesla T4", (7, 5)))


def facts(arch, *gpus, cuda="13.0") -> DeviceFacts:
    return DeviceFacts("2.11.0", cuda, arch, gpus)


def test_v100_on_the_cuda13_build_is_refused_once_per_gpu_kind_naming_the_cuda126_build():
    problems = runtime_problems(facts(CU130, V100, V100, V100), "fp16", wants_gpu=True)
    assert len(problems) == 1
    assert "Tesla V100-SXM2-32GB (compute capability 7.0) has no kernels in torch 2.11.0 (CUDA 13.0" in problems[0]
    assert V100_FIX in problems[0] and "cu126" in problems[0] and "<2.15" in problems[0]


def test_v100_on_the_cuda126_build_runs_fp16_and_refuses_bf16_naming_the_fp16_preset():
    v100 = facts(CU126, V100, cuda="12.6")
    assert runtime_problems(v100, "fp16", wants_gpu=True) == []
    assert runtime_problems(v100, "fp32", wants_gpu=True) == []
    (bf16,) = runtime_problems(v100, "bf16", wants_gpu=True)
    assert "no bf16 tensor cores" in bf16 and "v100-zero3-fp16" in bf16


@pytest.mark.parametrize("gpu", [A100, H100])
def test_a100_and_h100_run_bf16_on_either_build(gpu):
    for arch in (CU130, CU126):
        assert runtime_problems(facts(arch, gpu), "bf16", wants_gpu=True) == []


def test_t4_has_kernels_in_the_cuda13_build_but_no_bf16():
    assert runtime_problems(facts(CU130, T4), "fp16", wants_gpu=True) == []
    assert runtime_problems(facts(CU130, T4), "bf16", wants_gpu=True)


def test_a_mixed_host_names_only_the_gpu_kind_without_kernels():
    problems = runtime_problems(facts(CU130, A100, V100), "fp16", wants_gpu=True)
    assert len(problems) == 1 and problems[0].startswith("Tesla V100")


def test_cpu_machine_is_fine_for_the_cpu_preset_and_refused_for_a_gpu_preset():
    cpu = DeviceFacts("2.13.0+cpu", None)
    assert runtime_problems(cpu, "fp32", wants_gpu=False) == []
    (problem,) = runtime_problems(cpu, "fp16", wants_gpu=True)
    assert "sees no CUDA device" in problem and "a CPU build" in problem
    assert cpu.describe() == "no GPU; torch 2.13.0+cpu, CPU build"


def test_cuda_compatibility_rules():
    assert has_kernels((8, 6), ("sm_80",))          # same major, newer minor: the cubin runs
    assert not has_kernels((8, 0), ("sm_86",))      # an older minor does not
    assert not has_kernels((9, 0), ("sm_80",))      # nor another major
    assert has_kernels((9, 0), ("compute_80",))     # PTX is compiled for newer GPUs by the driver
    assert not has_kernels((7, 0), ("compute_75",))
    assert has_kernels((9, 0), ("sm_90a",)) and not has_kernels((9, 1), ("sm_90a",))  # arch-specific: that chip


def test_precision_and_attention_follow_the_architecture_not_the_emulation_probe():
    assert auto_dtype((7, 0)) == "fp16" and auto_dtype((7, 5)) == "fp16"
    assert auto_dtype((8, 0)) == "bf16" and auto_dtype((9, 0)) == "bf16"
    assert attention_kernel("sdpa", (7, 0), "fp16").startswith("SDPA's memory-efficient kernel")
    assert attention_kernel("sdpa", (9, 0), "bf16") == "SDPA's flash kernel"
    assert attention_kernel("sdpa", None, "fp32") == "SDPA on the CPU"
    assert "needs compute capability 8.0" in attention_kernel("flash_attention_2", (7, 0), "fp16")


def test_facts_travel_as_json_between_a_rank_and_the_preflight_table():
    f = facts(CU126, V100, V100, cuda="12.6")
    assert DeviceFacts.from_dict(f.to_dict()) == f
    assert f.describe().startswith("2 x Tesla V100-SXM2-32GB (7.0); torch 2.11.0, CUDA 12.6 [sm_50")


def test_a_missing_declared_package_is_named_with_its_pip_command(monkeypatch):
    import importlib.metadata as md

    real = md.version

    def version(name):
        if name == "accelerate":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "version", version)
    (problem,) = environment_problems("fp32", wants_gpu=False, facts=DeviceFacts("2.13.0", None))
    assert problem.startswith("missing Python package(s) accelerate>=") and "pip install 'accelerate>=" in problem


def test_the_paper_plan_names_the_attention_kernel_a_v100_gets():
    from pathlib import Path

    from typer.testing import CliRunner

    from medtrain.cli import app

    hosts = Path(__file__).resolve().parents[2] / "hostfiles" / "v100x20"
    r = CliRunner().invoke(app, ["plan", "--hosts", str(hosts)])
    assert r.exit_code == 0, r.output
    assert "attention    SDPA's memory-efficient kernel (flash needs compute capability 8.0)" in r.output
