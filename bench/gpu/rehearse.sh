#!/usr/bin/env bash
# `make gpu-rehearsal`: the GPU kit on an imitation of the device's software, here, before a GPU minute is spent.
#
# The device starts bare and offline with its own image (Python 3.12, torch 2.11 CUDA build, transformers 5.17,
# no deepspeed; bench/gpu/image.txt) and gets only the repository and the carried .gpu/ kit. This script builds
# that image as a Python 3.12 virtual environment (pip's cache keeps torch's 2.7 GB download for the next run),
# refuses it if it holds a package the image lacks (bench/gpu/image_packages.txt), copies the tree without
# ../shared beside it, and then, in a network namespace with loopback only (no network, no hub):
#   1. bench/gpu/check.sh --rehearse: the kit's install exactly as on the device, then every stage with the CUDA
#      ones at CPU scale (the benchmarks' own code, the HF Trainer half included, on the device's versions);
#   2. a tiny end-to-end run with those versions: `medtrain demo --quick` (continual steps through the launcher,
#      export, SFT from every checkpoint, CMExam/MMLU/CMMLU eval, the report).
# Exit 0 only when both passed. Results: .rehearsal/out/ (gpu_report.md, stages.jsonl, log.txt, demo.log).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${REHEARSAL_DIR:-$ROOT/.rehearsal}
IMAGE=$WORK/image
t0=$(date +%s)

# a Python 3.12 that runs: pyenv's shim for python3.12 exists on PATH even where 3.12 is not its global version
py312=""
for candidate in "$(command -v python3.12 || true)" \
    $(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12 2>/dev/null) \
    /usr/bin/python3.12 /usr/local/bin/python3.12; do
  if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    py312=$candidate; break
  fi
done
[ -n "$py312" ] || { echo "gpu-rehearsal: no Python 3.12 here (the device's); install it (pyenv install 3.12)" >&2; exit 2; }
[ -d .gpu/wheels ] || { echo "gpu-rehearsal: no kit in .gpu/; run make gpu-kit first" >&2; exit 2; }

# 1. the image, rebuilt only when image.txt changes
stamp="$IMAGE/.image-$(sha256sum bench/gpu/image.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "gpu-rehearsal: building the device image's Python ($("$py312" -V), bench/gpu/image.txt) in $IMAGE"
  rm -rf "$IMAGE"
  "$py312" -m venv "$IMAGE"
  "$IMAGE/bin/python" -m pip install -q --upgrade pip
  "$IMAGE/bin/python" -m pip install -q -r bench/gpu/image.txt
  touch "$stamp"
fi
# pip may pull in a dependency the image's reading does not list: take it out again, so that the imitation is
# never richer than the device (poorer is safe: what medtrain then misses must come with the kit)
extra=$("$IMAGE/bin/python" -m pip list --format=freeze 2>/dev/null | cut -d= -f1 | tr 'A-Z_.' 'a-z--' | sort \
  | comm -23 - <(grep -v '^#' bench/gpu/image_packages.txt | tr 'A-Z_.' 'a-z--' | sort))
if [ -n "$extra" ]; then
  echo "gpu-rehearsal: removing what the device image lacks: $(echo $extra)"
  "$IMAGE/bin/python" -m pip uninstall -q -y $extra
fi

# 2. the tree as the device gets it: tracked and untracked-not-ignored files and the carried kit, nothing beside
TREE=$WORK/tree/medtrain
rm -rf "$WORK/tree" "$WORK/out" "$WORK/home" "$WORK/demo"
mkdir -p "$TREE" "$WORK/out" "$WORK/home"
git ls-files -z --cached --others --exclude-standard \
  | python3 -c 'import os, sys; sys.stdout.write("".join(p + "\0" for p in sys.stdin.read().split("\0") if p and os.path.lexists(p)))' \
  | tar --null -T - -cf - | tar -xf - -C "$TREE"
cp -r .gpu "$TREE/.gpu"
echo "gpu-rehearsal: tree copied to $TREE ($(du -sh "$TREE" | cut -f1) with the kit; ../shared not beside it)"

# 3. offline: a network namespace with loopback only where we may make one (root), else the offline variables
NETNS=()
if unshare -n true 2>/dev/null; then NETNS=(unshare -n); else echo "gpu-rehearsal: note: cannot unshare the" \
  "network (not root?); offline by HF_HUB_OFFLINE/PIP_NO_INDEX only"; fi
cat >"$WORK/inside.sh" <<'EOF'
set -u
command -v ip >/dev/null && ip link set lo up 2>/dev/null
cd "$TREE"
bash bench/gpu/check.sh --rehearse
kit=$?
export PYTHONPATH=/tmp/medtrain_kit/medtrain:/tmp/medtrain_kit/deps PATH=/tmp/medtrain_kit/medtrain/bin:/tmp/medtrain_kit/deps/bin:$PATH
t=$(date +%s)
(cd "$HOME" && timeout 900 medtrain demo --quick --workdir "$WORK/demo") >"$OUT/demo.log" 2>&1
demo=$?
echo "{\"kit_rc\": $kit, \"demo_rc\": $demo, \"demo_seconds\": $(( $(date +%s) - t ))}" >"$OUT/rehearsal.json"
exit $(( kit || demo ))
EOF
set +e
env -i HOME="$WORK/home" PATH="$IMAGE/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" LANG=C.UTF-8 \
  TREE="$TREE" WORK="$WORK" OUT="$WORK/out" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PIP_NO_INDEX=1 \
  "${NETNS[@]}" bash "$WORK/inside.sh"
rc=$?
set -e
echo
if grep -q '"demo_rc": 0' "$WORK/out/rehearsal.json" 2>/dev/null; then
  echo "tiny end-to-end (medtrain demo --quick on the image's versions): passed" \
       "($(sed 's/.*"demo_seconds": \([0-9]*\).*/\1/' "$WORK/out/rehearsal.json") s)"
else
  echo "tiny end-to-end (medtrain demo --quick on the image's versions): FAILED; last lines of $WORK/out/demo.log:"
  tail -25 "$WORK/out/demo.log" 2>/dev/null
fi
echo "gpu-rehearsal: $([ $rc = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t0 )) s (results in $WORK/out)"
exit $rc
