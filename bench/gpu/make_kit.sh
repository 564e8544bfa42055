#!/usr/bin/env bash
# `make gpu-kit`: everything the bare, offline GPU machine lacks, in the git-ignored .gpu/ that travels with the
# repository (device `carry: [".gpu"]`): cp312 manylinux wheels for the packages its image does not have, a
# pure-Python deepspeed wheel (the registry has only an sdist), and the tokenizer the benchmarks use.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
KIT=.gpu
[ -d "$KIT" ] && chmod -R u+w "$KIT"  # a copied tokenizer may have come read-only
rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/tokenizers"
# what the image lacks (its package list: /work/.library/device/KINDS.md), pinned to the versions tested here
pkgs=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 hjson==3.1.0
      levenshtein==0.27.5 rapidfuzz==3.14.6 orjson==3.13.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$KIT/wheels" "${pkgs[@]}"
# deepspeed builds as a py3-none-any wheel without compiling an op (they build just in time where used); its
# setup.py imports torch, so build against this environment's torch instead of an isolated one
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$KIT/wheels" deepspeed==0.19.8
TOK=${MEDTRAIN_LLAMA2_TOKENIZER:-../shared/data/tokenizers/llama2}
if [ -d "$TOK" ]; then
  cp -r "$TOK" "$KIT/tokenizers/llama2"
  chmod -R u+w "$KIT/tokenizers"
else
  # the benchmarks still run (on a BPE tokenizer trained on the samples, vocabulary 1,000 instead of 32,000),
  # but their figures are then not Llama-2's: say so loudly, and refuse where the caller asked for the real one
  echo "WARNING: no Llama-2 tokenizer at $TOK (set MEDTRAIN_LLAMA2_TOKENIZER): the kit has none, and the GPU" \
       "benchmarks will train a small BPE tokenizer, so their MFU and memory are not the 1B Llama-2's" >&2
  [ "${MEDTRAIN_KIT_NEEDS_TOKENIZER:-0}" = 1 ] && exit 2
fi
du -sh "$KIT"
ls "$KIT/wheels"
