"""The small data sets in the real schemas that the demo and tests run on, shipped in the wheel (README.md)."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
