"""The small data sets in the real schemas that the demo and tests run on, shipped in the wheel (README.md)."""

from pathlib import Path

DIR = Path(__file__).resolve().parent


def sample_lines(limit: int = 300) -> list[str]:
    """A few hundred lines of the shipped medical text (Huatuo questions and answers, CMExam rows), stripped: what
    an export's tokenizer is checked on against the training tokenizer."""
    import json

    def strings(value) -> list[str]:
        if isinstance(value, str):
            return [value]
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        return [s for v in items for s in strings(v)]

    lines = [s for line in (DIR / "huatuo_sample.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
             for s in strings(json.loads(line))]
    lines += (DIR / "cmexam_train.csv").read_text(encoding="utf-8").splitlines()
    return [x.strip() for x in lines if x.strip()][:limit]
