"""Built-in run recipes, shipped in the wheel: `paper/` (the paper's runs) and `tiny/` (CPU runs for the demo and
tests). `medtrain recipes` lists them; `--recipe paper/continual_llama2_13b` names one without a path."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
