"""The floor every room stands on: recipes, model shapes, the run spec and DeepSpeed presets, prompt templates,
each benchmark's schema (core.benchmarks), errors, publishing, disks, digests and the rank lifecycle.

launch/, the ranks (medtrain/train), data_prep/ and eval/ import from here; this package imports none of them,
so the cluster side and the ranks agree on one computation, and prep and eval on one reading of every benchmark,
instead of importing each other.
"""

__version__ = "0.1.0"
