"""`medtrain demo`: the whole paper pipeline at toy scale on CPU, on the samples the project ships, through the
same commands a user types (each is printed before it runs).

tokenizer -> tiny base Llama -> prep huatuo / cmexam -> launch continual (2 ranks, ZeRO-3, several checkpoints)
-> sweep (the training data checked for the benchmarks' questions; per checkpoint: export, launch SFT, eval
CMExam/MMLU/CMMLU and their clean subsets; base and continual-only models too)
-> report.md (Table 3) and the loss curve (Figure 1).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from medtrain.core.errors import RunFailed
from medtrain.core.log import get_logger
from medtrain.data_prep.samples import DIR as SAMPLES
from medtrain.recipes import DIR as RECIPES

log = get_logger(__name__)

SIZES = {
    # continual: 63 packed 128-token blocks of the Huatuo-style sample per epoch = 8 steps at batch 8;
    # 8 epochs = 64 steps with a checkpoint every 16, the paper's four checkpoints (750..3000) in miniature
    "full": {"continual": ["epochs=8", "checkpoint_every=16", "eval_every=8", "seq_len=128"],
             "checkpoints": "0,16,32,48,64",
             "sft": ["epochs=4", "seq_len=512"], "limit": None, "max_new_tokens": 96},
    "quick": {"continual": ["max_steps=6", "checkpoint_every=3", "eval_every=3", "seq_len=64"],
              "checkpoints": "0,3,6",
              "sft": ["max_steps=3", "seq_len=512"], "limit": 6, "max_new_tokens": 24},
}


class DemoError(RunFailed):
    """A demo step failed; the message names the command."""


def medtrain_cmd(*args: str, cwd: Path) -> None:
    log.info(f"\n$ medtrain {shlex.join(args)}")
    proc = subprocess.run([sys.executable, "-m", "medtrain", *args], cwd=cwd)
    if proc.returncode != 0:
        raise DemoError(f"`medtrain {shlex.join(args)}` exited with {proc.returncode}")


def sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def run_demo(workdir: Path, size: str = "full") -> Path:
    cfg = SIZES[size]
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tok, base = workdir / "tokenizer", workdir / "base"
    data_h, data_c = workdir / "data" / "huatuo", workdir / "data" / "cmexam_reasoning"
    cont, sweep_dir, report = workdir / "runs" / "continual", workdir / "sweep", workdir / "report"
    hosts = workdir / "hostfile"
    hosts.write_text("localhost slots=2\n")

    if (tok / "tokenizer.json").is_file():
        log.info(f"reusing tokenizer {tok}")
    else:
        inputs = [SAMPLES / "huatuo_sample.jsonl", SAMPLES / "cmexam_train.csv", *sorted(SAMPLES.glob("*mmlu/*/*.csv"))]
        medtrain_cmd("tokenizer", *[x for p in inputs for x in ("--input", str(p))], "--out", str(tok),
                     "--vocab-size", "1500", cwd=workdir)
    if (base / "config.json").is_file():
        log.info(f"reusing base model {base}")
    else:
        medtrain_cmd("init-model", "--config", "tiny-wide", "--tokenizer", str(tok), "--out", str(base), cwd=workdir)
    # 5% of the Huatuo-style documents held out (data/huatuo/val): the validation curve beside the training loss
    for out, args in ((data_h, ["prep", "huatuo", "--input", str(SAMPLES / "huatuo_sample.jsonl"), "--val-fraction",
                                "0.05"]),
                      (data_c, ["prep", "cmexam", "--input", str(SAMPLES / "cmexam_train.csv"), "--mode",
                                "with_reasoning"])):
        if (out / "manifest.json").is_file() and (out is not data_h or (out / "val" / "manifest.json").is_file()):
            log.info(f"reusing prepared data {out} (delete it to prepare again)")
        else:
            medtrain_cmd(*args, "--tokenizer", str(tok), "--out", str(out), "--seq-len", "512", "--overwrite",
                         cwd=workdir)

    common = [f"tokenizer={tok}"]
    if (cont / "export" / "config.json").is_file():
        log.info(f"reusing continual run {cont}")
    else:
        medtrain_cmd("launch", "--hosts", str(hosts), "--launcher", "local", "--recipe",
                     str(RECIPES / "tiny/continual.yaml"),
                     *sets([*common, f"model={base}", "init=pretrained", f"data={data_h}", f"output_dir={cont}",
                            f"val_data={data_h / 'val'}", "keep_checkpoints=0", *cfg["continual"]]),
                     *(["--resume"] if (cont / "checkpoints").is_dir() else []), cwd=workdir)
    limit = ["--limit", str(cfg["limit"])] if cfg["limit"] else []
    medtrain_cmd("sweep", "--continual", str(cont), "--sft-recipe", str(RECIPES / "tiny/sft.yaml"),
                 "--checkpoints", cfg["checkpoints"], "--hosts", str(hosts), "--launcher", "local",
                 "--out", str(sweep_dir), "--cmexam-data", str(SAMPLES / "cmexam_test.csv"),
                 "--mmlu-data", str(SAMPLES / "mmlu"), "--cmmlu-data", str(SAMPLES / "cmmlu"),
                 "--max-new-tokens", str(cfg["max_new_tokens"]), *limit, "--contamination",
                 *sets([*common, f"data={data_c}", *cfg["sft"]]), cwd=workdir)
    medtrain_cmd("report", str(cont), str(sweep_dir), "--out", str(report), "--overwrite", cwd=workdir)
    minutes = (time.perf_counter() - start) / 60
    log.info(f"\ndemo finished in {minutes:.1f} min\n  report: {report / 'report.md'}\n  loss curve: "
          f"{report / 'loss_curve.png'}")
    return report / "report.md"
