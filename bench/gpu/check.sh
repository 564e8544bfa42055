#!/usr/bin/env bash
# The GPU acceptance kit, run on the bare, offline GPU machine from the repository root (`make gpu-kit` first,
# here, then carry .gpu): install what the image lacks from .gpu/ with --no-index, install medtrain with
# --no-deps, run `pytest -m gpu`, then the GPU benchmarks; write $OUT/gpu_report.json and $OUT/gpu_report.md.
# Budget: at most 8 minutes from a bare start.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
SITE=/tmp/medtrain_site
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/wheels/*.whl \
  || { echo "wheel install failed" | tee "$OUT/gpu_report.md"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" . \
  || { echo "medtrain install failed" | tee -a "$OUT/gpu_report.md"; exit 1; }
export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH"
LOG="$OUT/log.txt"  # one log: the device hands back at most 8 files
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" "$LOG"
python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)" | tee -a "$LOG"

timeout 300 python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu.py --junitxml "$OUT/pytest_gpu.xml" \
  2>&1 | tail -40 | tee -a "$LOG"
TOK=()
[ -d .gpu/tokenizers/llama2 ] && TOK=(--tokenizer .gpu/tokenizers/llama2)
timeout 240 python3 bench/train.py --model llama-1b --seq-len 2048 --ranks 1 --preset h100-zero3-bf16 \
  --precision bf16 --micro-batch 4 --global-batch 8 --steps 16 --log-every 2 --synthetic "${TOK[@]}" \
  --name gpu_train 2>&1 | tail -5 | tee -a "$LOG"
timeout 150 python3 bench/eval.py --model llama-1b "${TOK[@]}" --questions 128 --max-new-tokens 256 \
  --batch-size auto --baseline-questions 4 --generation-only --name gpu_eval 2>&1 | tail -5 | tee -a "$LOG"
cp bench/results/gpu_*.json "$OUT/" 2>/dev/null
python3 bench/gpu/report.py "$OUT" "$(( $(date +%s) - t0 ))"
rm -f "$OUT/gpu.txt"
