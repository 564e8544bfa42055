"""`medtrain contamination` measured: the real finding on ../shared's corpora, then the scan's speed, memory and
recall on a corpus of at least 200M tokens with questions planted at known places.

1. real: every text of ../shared/data/corpora (MedicalGPT, Toyhom, CMB, PromptCBLUE, CNMLEQA's questions as
   plain documents) through `medtrain prep text`, CNMLEQA also through `medtrain prep cnmleqa` as a user would
   fine-tune on it, both with Llama-2's tokenizer; checked against CMExam's val split (6,811 questions) and
   CMMLU's test set (11,582), n-gram 13, ratio 0.8.
2. planted: the real corpus's documents, less those a check of it alone against CMExam val flags, repeated in
   a new order each pass until the corpus holds --tokens tokens, written in the on-disk format at the token
   level (no tokenizer pass over 200M tokens). --plants CMExam val questions are put inside random documents at
   random token positions, half verbatim and half with 3 characters of the stem replaced. Checked against all
   of CMExam val: every planted question should be found and nothing else. The control is the same documents
   in another order without the plants: what it flags is real text of the corpus (a question's copies beyond
   the one the check of the corpus alone reported); a question flagged in the planted corpus but neither
   planted, nor inside a planted copy (CMExam's case groups share a vignette), nor in the control is a false
   finding. The check runs as `medtrain contamination` in its own process; peak memory is that process's
   largest resident set plus its largest worker's (each worker maps the corpus a range at a time). A corpus a
   quarter the size is checked the same way, to show the memory does not grow with the corpus.

    python bench/contamination.py [--tokens 200000000] [--plants 200]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save  # noqa: E402
from medtrain.contamination.questions import eval_questions  # noqa: E402
from medtrain.data_prep.format import DatasetWriter, TokenDataset  # noqa: E402
from medtrain.data_prep.pipeline import prep  # noqa: E402
from medtrain.data_prep.tokenizer import Encoder  # noqa: E402

TOKENIZER = SHARED / "tokenizers" / "llama2"
CMEXAM_VAL = SHARED / "cmexam" / "val.csv"
CMMLU = SHARED / "cmmlu"


def strings(node) -> list[str]:
    if isinstance(node, str):
        return [node] if node.strip() else []
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def corpus_documents() -> list[str]:
    """Every text under ../shared/data/corpora as documents: a JSON record's strings, a CSV row, a paragraph."""
    docs: list[str] = []
    for path in sorted((SHARED / "corpora").rglob("*")):
        if not path.is_file() or path.name == "LICENSE":
            continue
        text = path.read_text(encoding="utf-8", errors="replace").lstrip("\ufeff")
        if path.suffix == ".csv":
            docs += ["\n".join(row) for row in csv.reader(text.splitlines())]
        elif text.lstrip().startswith("["):
            docs += ["\n".join(strings(rec)) for rec in json.loads(text)]
        elif text.lstrip().startswith("{"):
            docs += ["\n".join(strings(json.loads(line))) for line in text.splitlines() if line.strip()]
        else:
            docs += [p for p in text.split("\n\n") if p.strip()]
    return [d for d in docs if d.strip()]


PEAK = """
import resource, sys
from medtrain.cli import app
try:
    app(sys.argv[1:], prog_name="medtrain", standalone_mode=False)
finally:
    peak = [resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print("PEAK_RSS_KIB", *peak, file=sys.stderr)
"""


def check(train: list[Path], evals: list[str], out: Path, workers: int) -> tuple[dict, list[dict], dict]:
    """`medtrain contamination` in a process of its own: (summary, findings, peak resident memory in GiB of that
    process, of its largest worker, and their sum: a bound on the whole)."""
    args = [sys.executable, "-c", PEAK, "contamination", "--out", str(out), "--workers", str(workers)]
    args += [a for t in train for a in ("--train", str(t))] + [a for e in evals for a in ("--eval", e)]
    proc = subprocess.run(args, check=True, stderr=subprocess.PIPE, text=True)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("PEAK_RSS_KIB"))
    main, worker = (int(x) / 2**20 for x in line.split()[1:])
    print(proc.stderr.splitlines()[0], file=sys.stderr)
    findings = [json.loads(x) for x in (out / "contaminated.jsonl").read_text(encoding="utf-8").splitlines()]
    peak = {"main_gib": round(main, 3), "largest_worker_gib": round(worker, 3), "sum_gib": round(main + worker, 3)}
    return json.loads((out / "summary.json").read_text()), findings, peak


def real_finding(root: Path, workers: int) -> tuple[dict, Path]:
    docs = corpus_documents()
    text = root / "corpora.jsonl"
    text.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    prep("text", [text], TOKENIZER, root / "corpora", seq_len=4096, workers=workers)
    prep("cnmleqa", [SHARED / "corpora" / "cnmleqa" / "CNMLEQA-3k.json"], TOKENIZER, root / "cnmleqa",
         mode="with_reasoning", seq_len=4096, workers=workers)
    summary, findings, peak = check([root / "corpora", root / "cnmleqa"], [f"cmexam={CMEXAM_VAL}", f"cmmlu={CMMLU}"],
                                    root / "real", workers)
    examples = sorted(findings, key=lambda f: (-f["ratio"], f["task"], f["index"]))
    picked = [f for f in examples if f["ratio"] == 1][:1] + [f for f in examples if f["ratio"] < 0.95][:1]
    picked += [f for f in examples if f["task"] == "cmmlu"][:1]
    return {"documents": len(docs), "tasks": summary["tasks"], "train": summary["train"],
            "scan": summary["scan"], "peak_rss": peak,
            "flagged_by_dataset": {t["path"]: sum(f["train_dataset"] == t["path"] for f in findings)
                                   for t in summary["train"]},
            "examples": [{k: f[k] for k in ("task", "index", "id", "train_dataset", "train_doc", "ratio", "question",
                                            "train_text")} for f in picked]}, root / "corpora"


def edited(text: str, rng: random.Random, n: int = 3) -> str:
    """n characters of the question's stem replaced by others: a near copy."""
    stem, _, rest = text.partition("\n")
    chars = list(stem)
    for i in rng.sample(range(len(chars)), min(n, len(chars))):
        chars[i] = "某" if chars[i] != "某" else "另"
    return "".join(chars) + "\n" + rest


def planted_corpus(base: TokenDataset, drop: set[int], target: int, plants: list[tuple[int, np.ndarray]],
                   out: Path, seed: int = 0) -> dict[int, int]:
    """base's documents (less `drop`) repeated in a new order each pass to `target` tokens, `plants` put into
    random documents at random positions; returns planted question -> corpus document."""
    rng = np.random.default_rng(seed)
    keep = np.array([i for i in range(len(base)) if i not in drop])
    per_pass = int(sum(len(base[i]) for i in keep))
    passes = -(-target // per_pass)
    total_docs = passes * len(keep)
    at = dict(zip(rng.choice(total_docs, len(plants), replace=False).tolist(), plants, strict=True))
    where: dict[int, int] = {}
    writer = DatasetWriter(out, vocab_size=base.manifest["tokenizer"]["vocab_size"], sft=False)
    doc = 0
    for _ in range(passes):
        for i in rng.permutation(keep):
            ids = np.asarray(base[i])
            if doc in at:
                q, q_ids = at[doc]
                k = int(rng.integers(0, len(ids) + 1))
                ids = np.concatenate([ids[:k], q_ids, ids[k:]])
                where[q] = doc
            writer.add(ids)
            doc += 1
    writer.finalize({"kind": "continual", "tokenizer": base.manifest["tokenizer"], "sources": ["bench planted"]})
    return where


def planted_run(root: Path, base: Path, drop: set[int], tokens: int, n_plants: int, workers: int) -> dict:
    questions = eval_questions("cmexam", CMEXAM_VAL)
    rng = random.Random(0)
    chosen = rng.sample(range(len(questions)), n_plants)
    texts = {q: (questions[q].text if k % 2 == 0 else edited(questions[q].text, rng)) for k, q in enumerate(chosen)}
    encoder = Encoder(TOKENIZER)
    plants = [(q, np.asarray(encoder.encode_batch(["\n" + texts[q] + "\n"])[0])) for q in chosen]
    dataset = TokenDataset(base)
    row = {}
    for size in sorted({tokens // 4, tokens}):
        corpus = root / f"planted_{size}"
        start = time.perf_counter()
        where = planted_corpus(dataset, drop, size, plants, corpus)
        built = time.perf_counter() - start
        summary, findings, peak = check([corpus], [f"cmexam={CMEXAM_VAL}"], root / f"check_{size}", workers)
        planted_corpus(dataset, drop, size, [], root / f"control_{size}", seed=1)
        _, control, control_peak = check([root / f"control_{size}"], [f"cmexam={CMEXAM_VAL}"],
                                         root / f"check_control_{size}", workers)
        in_control = {f["index"] for f in control}
        flagged = {f["index"] for f in findings}
        # a question sharing most of its text with a planted one (CMExam's case groups share a vignette; some
        # questions share an option list) is found inside that planted copy: a near copy, not a false finding
        sibling = {f["index"] for f in findings if f["index"] not in where and f["train_doc"] in set(where.values())}
        verbatim = set(chosen[0::2])
        row[str(size)] = {
            "corpus_tokens": summary["train"][0]["num_tokens"], "corpus_documents": summary["train"][0]["num_docs"],
            "build_seconds": round(built, 1), "scan": summary["scan"], "peak_rss": peak,
            "planted": len(where), "planted_found": len(flagged & set(where)),
            "verbatim_found": len(flagged & verbatim), "edited_found": len(flagged & (set(where) - verbatim)),
            "flagged_not_planted": len(flagged - set(where)),
            "flagged_not_planted_inside_a_planted_copy": len(sibling),
            "flagged_in_control": len(in_control),
            "flagged_not_planted_nor_in_control": len(flagged - set(where) - sibling - in_control),
            "control_peak_rss": control_peak,
            "missed": sorted(set(where) - flagged)[:10], "not_planted": sorted(flagged - set(where))[:10],
            "edited_ratio_min": min((f["ratio"] for f in findings if f["index"] in set(where) - verbatim),
                                    default=None)}
        print(json.dumps(row[str(size)], indent=2))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200_000_000)
    parser.add_argument("--plants", type=int, default=200)
    parser.add_argument("--workers", type=int, default=0, help="default: every core")
    args = parser.parse_args()
    from medtrain.contamination.scan import default_workers

    workers = args.workers or default_workers()
    with tempfile.TemporaryDirectory(prefix="bench-contamination-") as tmp:
        root = Path(tmp)
        real, base = real_finding(root, workers)
        print(json.dumps({k: v for k, v in real.items() if k != "examples"}, indent=2, ensure_ascii=False))
        _, alone, _ = check([base], [f"cmexam={CMEXAM_VAL}"], root / "base_alone", workers)
        drop = {f["train_doc"] for f in alone}
        planted = planted_run(root, base, drop, args.tokens, args.plants, workers)
    big = planted[str(max(int(k) for k in planted))]
    save("contamination", {
        "command": " ".join(sys.argv), "workers": workers, "real": real, "planted": planted,
        "tokens_per_s_per_core": big["scan"]["tokens_per_s_per_worker"],
        "peak_rss_gib": max(p["peak_rss"]["sum_gib"] for p in planted.values()),
        "planted_found": f"{big['planted_found']}/{big['planted']}",
        "flagged_not_planted_nor_in_control": big["flagged_not_planted_nor_in_control"],
        "targets": {"tokens_per_s_per_core": 20e6, "peak_rss_gib": 2.0}})


if __name__ == "__main__":
    main()
