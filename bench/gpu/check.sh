#!/usr/bin/env bash
# The GPU acceptance kit, run on the bare, offline GPU machine from the repository root (`make gpu-kit` first,
# here, then carry .gpu): install what the image lacks from .gpu/ with --no-index, install medtrain with
# --no-deps, run `pytest -m gpu`, then the GPU benchmarks; write $OUT/gpu_report.json and $OUT/gpu_report.md.
#
# It must give its figures inside ONE device command (600 s at most): one overall deadline (DEADLINE_S, 540 s by
# default) with a budget per stage, each stage's figures saved as soon as it has them, and the report written
# from an exit trap whatever happened. The exit code is 0 only when every stage passed.
#
#   bash bench/gpu/check.sh              # on the GPU machine
#   bash bench/gpu/check.sh --rehearse   # `make gpu-rehearsal`: the same stages, the CUDA ones at CPU scale
set -uo pipefail
cd "$(dirname "$0")/../.."
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PIP_NO_INDEX=1
export BENCH_RESULTS="$OUT"  # each benchmark saves its JSON straight into OUT the moment it has figures
T0=$(date +%s)
DEADLINE=$(( T0 + ${DEADLINE_S:-540} ))
LOG="$OUT/log.txt"     # one log and one stage table: the device hands back at most 8 files
STAGES="$OUT/stages.jsonl"
: >"$LOG"
: >"$STAGES"
SITE=/tmp/medtrain_kit/deps        # the kit's wheels (deepspeed, pydantic, ...), with their console scripts
SITE_MT=/tmp/medtrain_kit/medtrain  # medtrain itself, in a target of its own so neither install replaces bin/
FAILED=0

finish() {
  python3 bench/gpu/report.py "$OUT" "$(( $(date +%s) - T0 ))" "$REHEARSE" || echo "report.py failed" >>"$LOG"
  exit "$FAILED"
}
trap finish EXIT
trap 'echo "check.sh: stopped by a signal" >>"$LOG"; FAILED=1; exit' INT TERM

# stage NAME BUDGET_S CMD...: run CMD under min(BUDGET_S, time left before the deadline); its output goes to the
# log; one line of stages.jsonl records the outcome, the seconds and the last lines (report.py names the first
# failing stage with them).
stage() {
  local name=$1 budget=$2; shift 2
  local left=$(( DEADLINE - $(date +%s) )) t rc status part="$OUT/.stage.log"
  (( budget > left )) && budget=$left
  if (( budget < 5 )); then
    python3 - "$name" >>"$STAGES" <<'EOF'
import json, sys
print(json.dumps({"stage": sys.argv[1], "status": "not run", "reason": "no time left before the deadline"}))
EOF
    FAILED=1; return 1
  fi
  echo "=== $name (budget ${budget} s)" | tee -a "$LOG"
  t=$(date +%s)
  timeout --kill-after=15 "$budget" bash -c '"$@"' _ "$@" >"$part" 2>&1  # bash: a stage may be a function
  rc=$?
  cat "$part" >>"$LOG"
  status=passed
  (( rc != 0 )) && status=failed
  (( rc == 124 || rc == 137 )) && status="timed out"
  python3 - "$name" "$status" "$rc" "$(( $(date +%s) - t ))" "$part" >>"$STAGES" <<'EOF'
import json, sys
name, status, rc, seconds, part = sys.argv[1:]
tail = open(part, errors="replace").read().splitlines()[-15:]
print(json.dumps({"stage": name, "status": status, "rc": int(rc), "seconds": int(seconds), "tail": tail}))
EOF
  tail -3 "$part"
  rm -f "$part"
  [ "$status" = passed ] || FAILED=1
  [ "$status" = passed ]
}

kit_install() {
  rm -rf /tmp/medtrain_kit
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpu/wheels/*.whl \
    && python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE_MT" .
}

kit_versions() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  else
    echo "no nvidia-smi: $( ((REHEARSE)) && echo 'rehearsal on the CPU' || echo 'no GPU driver')" | tee "$OUT/gpu.txt"
  fi
  # from outside the tree, so that the installed medtrain is the one imported (inside, the checkout is)
  (cd / && python3 - <<'EOF'
import deepspeed, torch, transformers
from deepspeed.accelerator import get_accelerator
import medtrain
print("torch", torch.__version__, "cuda", torch.version.cuda, "deepspeed", deepspeed.__version__,
      "transformers", transformers.__version__, "accelerator", get_accelerator().device_name(),
      "medtrain from", medtrain.__file__)
import os
if os.environ["REHEARSE"] == "0" and not torch.cuda.is_available():
    raise SystemExit("torch sees no CUDA device: every later stage would skip or fail")
# the GPUs against the torch build, as preflight and every training rank check them (core.gpu_build)
from medtrain.core.gpu_build import DeviceFacts, attention_kernel, auto_dtype, runtime_problems
facts = DeviceFacts.here()
cap = facts.gpus[0].capability if facts.gpus else None
print("device check:", facts.describe(), "| eval dtype", auto_dtype(cap) if cap else "cpu",
      "| attention", attention_kernel("sdpa", cap, auto_dtype(cap) if cap else "fp32"))
problems = runtime_problems(facts, auto_dtype(cap) if cap else "fp32", wants_gpu=os.environ["REHEARSE"] == "0")
if problems:
    raise SystemExit("device check: " + "; ".join(problems))
EOF
  ) || return
  medtrain --version
}

export -f kit_install kit_versions
export OUT REHEARSE SITE SITE_MT
stage install 90 kit_install || exit
export PYTHONPATH="$SITE_MT:$SITE" PATH="$SITE_MT/bin:$SITE/bin:$PATH"
stage versions 45 kit_versions || exit

TOK=()
[ -d .gpu/tokenizers/llama2 ] && TOK=(--tokenizer .gpu/tokenizers/llama2)
if (( REHEARSE )); then
  # no CUDA here: collect the gpu tests (they skip), then the benchmarks' own code at CPU scale, so that every
  # path that does not need the device has run on the device's versions before a GPU minute is spent
  stage pytest_gpu 120 python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/system/test_gpu.py \
    --junitxml "$OUT/pytest_gpu.xml"
  stage train_bench 200 python3 bench/train.py --model tiny-wide --seq-len 64 --ranks 2 --preset cpu-zero3 \
    --precision fp32 --micro-batch 2 --global-batch 8 --steps 4 --log-every 1 --synthetic "${TOK[@]}" \
    --name gpu_train
  stage eval_bench 100 python3 bench/eval.py --model tiny "${TOK[@]}" --questions 8 --max-new-tokens 8 \
    --batch-size auto --baseline-questions 2 --generation-only --name gpu_eval
else
  stage pytest_gpu 200 python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/system/test_gpu.py \
    --junitxml "$OUT/pytest_gpu.xml"
  stage train_bench 170 python3 bench/train.py --model llama-1b --seq-len 2048 --ranks 1 --preset h100-zero3-bf16 \
    --precision bf16 --micro-batch 4 --global-batch 8 --steps 16 --log-every 2 --synthetic "${TOK[@]}" \
    --name gpu_train
  stage eval_bench 100 python3 bench/eval.py --model llama-1b "${TOK[@]}" --questions 128 --max-new-tokens 256 \
    --batch-size auto --baseline-questions 4 --generation-only --name gpu_eval
fi
