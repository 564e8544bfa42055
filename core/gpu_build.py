"""The GPUs and the torch build checked against each other, and what each GPU generation gets.

PyTorch's default wheels on PyPI from 2.11 on are CUDA 13 builds without kernels for compute capability 7.0, so on
the paper's V100s the first kernel of every rank fails with "no kernel image is available for execution on the
device"; only PyTorch's CUDA 12.6 builds still carry sm_70 (to 2.14). And `torch.cuda.is_bf16_supported()` says
True on a V100 (it counts emulation), so precision is chosen here from the compute capability, never from that
probe. Everything takes the facts as data (`DeviceFacts`), so the decisions are tested for every generation on a
machine without one; `DeviceFacts.here()` reads them from torch on a rank.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

BF16_MIN = (8, 0)
"""bf16 tensor cores (A100 and newer); below it bf16 is emulated, slowly."""
FLASH_MIN = (8, 0)
"""flash-attention 2, and SDPA's own flash kernel, need Ampere or newer."""
V100_FIX = ("a PyTorch build for CUDA 12.6, at most 2.14: pip install 'torch>=2.11,<2.15' --index-url "
            "https://download.pytorch.org/whl/cu126")


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


@dataclass(frozen=True)
class DeviceFacts:
    torch: str
    cuda: str | None
    """torch.version.cuda: None for a CPU build."""
    arch_list: tuple[str, ...] = ()
    """torch.cuda.get_arch_list(): the architectures the build carries kernels (sm_XY) or PTX (compute_XY) for."""
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)

    @classmethod
    def here(cls) -> DeviceFacts:
        import torch

        gpus: tuple[Gpu, ...] = ()
        arch: tuple[str, ...] = ()
        if torch.cuda.is_available():
            arch = tuple(torch.cuda.get_arch_list())
            gpus = tuple(Gpu(torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
                         for i in range(torch.cuda.device_count()))
        return cls(torch.__version__, torch.version.cuda, arch, gpus)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DeviceFacts:
        return cls(d["torch"], d.get("cuda"), tuple(d.get("arch_list", ())),
                   tuple(Gpu(g["name"], tuple(g["capability"])) for g in d.get("gpus", ())))

    def describe(self) -> str:
        """One cell of the preflight table: each distinct GPU with its capability, torch, CUDA and the build's
        architectures."""
        kinds = Counter(f"{g.name} ({g.capability[0]}.{g.capability[1]})" for g in self.gpus)
        gpus = ", ".join(f"{n} x {k}" for k, n in kinds.items()) or "no GPU"
        build = f"CUDA {self.cuda}" if self.cuda else "CPU build"
        arch = f" [{' '.join(self.arch_list)}]" if self.arch_list else ""
        return f"{gpus}; torch {self.torch}, {build}{arch}"


def _arch(entry: str) -> tuple[str, tuple[int, int], bool] | None:
    """'sm_86' -> ('sm', (8, 6), False); 'sm_90a' -> ('sm', (9, 0), True): arch-specific, that chip only."""
    m = re.fullmatch(r"(sm|compute)_(\d+)(\w?)", entry)
    if not m:
        return None
    major, minor = divmod(int(m.group(2)), 10)
    return m.group(1), (major, minor), bool(m.group(3))


def has_kernels(capability: tuple[int, int], arch_list: tuple[str, ...] | list[str]) -> bool:
    """CUDA's compatibility rules: a cubin runs on its major version at the same or a higher minor; PTX is
    compiled by the driver for any equal or newer capability."""
    for entry in arch_list:
        parsed = _arch(entry)
        if parsed is None:
            continue
        kind, (major, minor), specific = parsed
        if kind == "sm" and major == capability[0] and (minor == capability[1] if specific else minor <= capability[1]):
            return True
        if kind == "compute" and (major, minor) <= tuple(capability):
            return True
    return False


def build_fix(gpu: Gpu) -> str:
    if gpu.capability[0] == 7 and gpu.capability[1] < 5:
        return V100_FIX
    return (f"a PyTorch build whose torch.cuda.get_arch_list() includes {gpu.sm} (PyTorch's install selector names "
            "the CUDA version for it)")


def build_problems(facts: DeviceFacts) -> list[str]:
    """One phrase per GPU kind the installed torch cannot run a kernel on, with the build that can."""
    problems: list[str] = []
    for gpu in dict.fromkeys(facts.gpus):
        if not has_kernels(gpu.capability, facts.arch_list):
            problems.append(f"{gpu.name} (compute capability {gpu.capability[0]}.{gpu.capability[1]}) has no kernels "
                            f"in torch {facts.torch} (CUDA {facts.cuda}, built for {' '.join(facts.arch_list)}); "
                            f"install {build_fix(gpu)}")
    return problems


def precision_problems(facts: DeviceFacts, precision: str) -> list[str]:
    """bf16 below compute capability 8.0 runs emulated (or not at all): refused, the fp16 preset named."""
    if precision != "bf16":
        return []
    old = [g for g in dict.fromkeys(facts.gpus) if tuple(g.capability) < BF16_MIN]
    return [f"{g.name} (compute capability {g.capability[0]}.{g.capability[1]}) has no bf16 tensor cores; train in "
            "fp16: preset v100-zero3-fp16 (--set preset=v100-zero3-fp16 --set precision=fp16)" for g in old]


def runtime_problems(facts: DeviceFacts, precision: str | None, wants_gpu: bool) -> list[str]:
    """Everything about the GPUs that stops a run before its first step, one phrase each."""
    if wants_gpu and not facts.gpus:
        build = f"CUDA {facts.cuda}" if facts.cuda else "a CPU build"
        return [f"torch {facts.torch} ({build}) sees no CUDA device, and the recipe's preset trains on GPUs; "
                "install the CUDA build for these GPUs (README, Installing) or use preset cpu-zero3"]
    return build_problems(facts) + (precision_problems(facts, precision) if precision else [])


def auto_dtype(capability: tuple[int, int] | None) -> str:
    """Eval's automatic half precision on a GPU: bf16 from Ampere on, fp16 below (a V100's bf16 is emulated)."""
    return "bf16" if capability is not None and tuple(capability) >= BF16_MIN else "fp16"


def attention_kernel(attn_implementation: str, capability: tuple[int, int] | None, precision: str) -> str:
    """What attention the run gets on this GPU generation (None: the CPU), named the way a user looks it up."""
    if attn_implementation == "eager":
        return "eager (the full seq x seq scores are materialised)"
    if attn_implementation == "flash_attention_2":
        if capability is None or tuple(capability) < FLASH_MIN:
            return "flash_attention_2 asked for, but it needs compute capability 8.0 (A100 or newer)"
        return "flash-attention 2 (flash_attn package)"
    if capability is None:
        return "SDPA on the CPU"
    if tuple(capability) >= FLASH_MIN and precision in ("fp16", "bf16"):
        return "SDPA's flash kernel"
    why = "flash needs compute capability 8.0" if tuple(capability) < FLASH_MIN else "flash needs fp16/bf16"
    return f"SDPA's memory-efficient kernel ({why})"
