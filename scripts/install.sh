#!/usr/bin/env bash
# Install reasoning360 into the current Python with the given extras (e.g. `test`).
# torch goes first: with torch 2.13.0 already present, nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
if ! python -c "import torch" 2>/dev/null; then
  pip install -q torch==2.13.0
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
pip install -q -c requirements/constraints.txt -e "$spec"
