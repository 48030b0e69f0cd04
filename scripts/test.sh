#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (what CI runs).
# The Slurm tests start a local cluster themselves (root on Debian) and skip elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,verl
python -m pytest -ra "$@"
