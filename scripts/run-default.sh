#!/usr/bin/env bash
# The embedded default on a fresh machine: install, then run the backtrack study on CPU.
# Extra arguments are Hydra overrides, e.g. `bash scripts/run-default.sh rl.rollout.n=4`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python sweep.py +grid=backtrack "$@"
