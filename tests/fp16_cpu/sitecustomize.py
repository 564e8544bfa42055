"""Test environment only (never on the product's path): let DeepSpeed's CPU accelerator run fp16.

DeepSpeed refuses fp16 on CPUs without avx512_fp16/AMX ("Type fp16 is not supported on your device") because it
asks oneDNN for fast half kernels; torch's CPU half arithmetic works without them, only slower. The fp16 tests
put this directory first on the ranks' PYTHONPATH, so the paper's precision (dynamic loss scaling, skipped
steps, fp16 checkpoints and export) is exercised for real on this machine.
"""

try:
    from deepspeed.accelerator import cpu_accelerator
except ImportError:  # an interpreter without deepspeed (ssh, pdsh helpers): nothing to patch
    pass
else:
    cpu_accelerator.CPU_Accelerator.is_fp16_supported = lambda self: True  # supported_dtypes follows it
