#!/usr/bin/env bash
# Install reasoning360 into the current Python with the given extras (e.g. `test` or `test,verl`).
# torch goes first: with torch 2.13.0 already present, nothing pulls a CUDA build.
# The verl extra needs its own pins (requirements/verl-constraints.txt) to avoid a long
# pip backtrack; they are compatible with the base constraints.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
if ! python -c "import torch" 2>/dev/null; then
  pip install -q torch==2.13.0
fi
constraints=(-c requirements/constraints.txt)
case ",$extras," in *,verl,*) constraints+=(-c requirements/verl-constraints.txt) ;; esac
spec="."
[ -n "$extras" ] && spec=".[$extras]"
pip install -q "${constraints[@]}" -e "$spec"
