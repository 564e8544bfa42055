"""Prep throughput on >= 50 MB of real Chinese medical text (../shared/data/corpora, repeated as needed).

For each tokenizer (Llama-2 SentencePiece, Llama-2 derived fast tokenizer, Chinese-LLaMA-2 SentencePiece):
  medtrain     `medtrain prep text` end to end: read, parse, encode in worker processes, write the mmap dataset
  limit        the same tokenizer encoding the same texts on the same workers, nothing else
  datasets     the peers' path: datasets.map(batched=True, num_proc=workers) + save_to_disk (Arrow)
and random-access reads/s of the medtrain reader against the Arrow dataset. Targets: medtrain >= 0.8 x limit,
and faster than the datasets pipeline.

    python bench/prep.py [--mb 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SHARED, save  # noqa: E402


def corpus_texts() -> list[str]:
    """Real Chinese medical documents: Toyhom dialogues, internal-medicine QA, MedicalGPT corpora."""
    base = SHARED / "corpora"
    texts = []
    with open(base / "toyhom" / "dialogues_sample.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            texts.append(f"{row['title']}\n{row['ask']}\n{row['answer']}")
    blocks = (base / "toyhom" / "internal_medicine.txt").read_text(encoding="utf-8").split("\n\n\n")
    texts += [b.strip() for b in blocks if b.strip()]
    for line in (base / "medicalgpt" / "medical_corpus.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            texts.append(f"{rec.get('问', '')}\n{rec.get('答', '')}")
    texts += [p for p in (base / "medicalgpt" / "fever.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return texts


def write_input(path: Path, texts: list[str], mb: float) -> int:
    """JSON Lines {"text": ...}, the corpus repeated (shuffled per pass) until it holds `mb` megabytes."""
    rng = random.Random(0)
    size, n = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            batch = texts[:]
            rng.shuffle(batch)
            for t in batch:
                line = json.dumps({"text": t}, ensure_ascii=False) + "\n"
                f.write(line)
                size += len(line.encode())
                n += 1
    return n


_ENC = None


def _init(tok: str, backend: str) -> None:
    global _ENC
    from medtrain.data_prep.tokenizer import Encoder

    _ENC = Encoder(tok, backend=backend)


def _count(texts: list[str]) -> int:
    return sum(len(x) for x in _ENC.encode_batch(texts))


def limit(texts: list[str], tok: Path, backend: str, workers: int) -> tuple[int, float]:
    """Encoding alone, same chunking, same worker processes."""
    chunks = [texts[i:i + 512] for i in range(0, len(texts), 512)]
    with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(str(tok), backend)) as pool:
        pool.map(_count, chunks[:workers])  # warm the workers
        t = time.perf_counter()
        n = sum(pool.imap(_count, chunks))
        return n, time.perf_counter() - t


def datasets_pipeline(path: Path, tok: Path, backend: str, workers: int, out: Path) -> tuple[int, float, object]:
    import datasets

    datasets.disable_progress_bars()
    t = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(out / "cache"))

    def encode(batch):
        global _ENC
        if _ENC is None:
            _init(str(tok), backend)
        ids = _ENC.encode_batch(batch["text"])
        eos = _ENC.info.eos_id
        return {"input_ids": [x + [eos] for x in ids]}

    ds = ds.map(encode, batched=True, num_proc=workers, remove_columns=["text"])
    ds.save_to_disk(str(out / "arrow"))
    seconds = time.perf_counter() - t
    n = sum(len(x) for x in ds["input_ids"])
    return n, seconds, datasets.load_from_disk(str(out / "arrow"))


def random_reads(get, n_items: int, reads: int = 20000) -> float:
    rng = random.Random(1)
    ix = [rng.randrange(n_items) for _ in range(reads)]
    t = time.perf_counter()
    for i in ix:
        get(i)
    return reads / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from medtrain.data_prep.format import TokenDataset
    from medtrain.data_prep.pipeline import prep

    toks = {
        "llama2-sentencepiece": (SHARED / "tokenizers" / "llama2", "sentencepiece"),
        "llama2-hf-fast": (SHARED / "tokenizers" / "llama2" / "derived_hf_fast", "hf"),
        "chinese-llama2-sentencepiece": (SHARED / "tokenizers" / "chinese-llama2", "sentencepiece"),
    }
    results = {"workers": args.workers, "tokenizers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = corpus_texts()
        src = tmp / "corpus.jsonl"
        records = write_input(src, texts, args.mb)
        mb = src.stat().st_size / 1e6
        print(f"input: {mb:.1f} MB, {records:,} documents (real Chinese medical text, repeated)")
        results["input"] = {"mb": mb, "documents": records}
        all_texts = [json.loads(line)["text"] for line in open(src, encoding="utf-8")]
        runs: dict[str, dict[str, list[float]]] = {name: {} for name in toks}
        for rnd in range(args.repeats):  # interleaved rounds; medians, since a shared 2-core machine is noisy
            for name, (tok, backend) in toks.items():
                out = tmp / name
                t = time.perf_counter()
                m = prep("text", [src], tok, out / "medtrain", workers=args.workers)
                ours_s = time.perf_counter() - t
                n_lim, lim_s = limit(all_texts, tok, backend, args.workers)
                n_ds, ds_s, arrow = datasets_pipeline(src, tok, backend, args.workers, out)
                data = TokenDataset(out / "medtrain")
                r = runs[name]
                for key, value in (("tokens", m["num_tokens"]), ("medtrain", m["num_tokens"] / ours_s),
                                   ("limit", n_lim / lim_s), ("datasets", n_ds / ds_s),
                                   ("reads", random_reads(data.__getitem__, len(data))),
                                   ("arrow_reads", random_reads(lambda i, a=arrow: a[i]["input_ids"], len(arrow)))):
                    r.setdefault(key, []).append(value)
                print(f"round {rnd + 1} {name}: medtrain {m['num_tokens'] / ours_s / 1e6:.2f}, limit "
                      f"{n_lim / lim_s / 1e6:.2f}, datasets {n_ds / ds_s / 1e6:.2f} M tok/s", flush=True)
                shutil.rmtree(out, ignore_errors=True)
        for name, r in runs.items():
            med = {k: statistics.median(v) for k, v in r.items()}
            row = {
                "tokens": int(med["tokens"]), "rounds": args.repeats, "medtrain_mtok_s": med["medtrain"] / 1e6,
                "limit_mtok_s": med["limit"] / 1e6, "datasets_mtok_s": med["datasets"] / 1e6,
                "vs_limit": med["medtrain"] / med["limit"], "vs_datasets": med["medtrain"] / med["datasets"],
                "reads_per_s": med["reads"], "arrow_reads_per_s": med["arrow_reads"],
                "reads_vs_arrow": med["reads"] / med["arrow_reads"],
                "projected_1b_tokens_64_cores_s": 1e9 / (med["medtrain"] / args.workers * 64),
                "all_rounds_mtok_s": {k: [x / 1e6 for x in r[k]] for k in ("medtrain", "limit", "datasets")},
            }
            results["tokenizers"][name] = row
            print(f"{name} (median of {args.repeats}): medtrain {row['medtrain_mtok_s']:.2f} M tok/s = "
                  f"{row['vs_limit']:.2f} x limit ({row['limit_mtok_s']:.2f}), {row['vs_datasets']:.2f} x "
                  f"datasets.map ({row['datasets_mtok_s']:.2f}); reads {row['reads_per_s']:,.0f}/s = "
                  f"{row['reads_vs_arrow']:.0f} x Arrow; 1B tokens on 64 cores: "
                  f"{row['projected_1b_tokens_64_cores_s']:.0f} s of encoding (linear scaling assumed)")
    save("prep", results)


if __name__ == "__main__":
    main()
