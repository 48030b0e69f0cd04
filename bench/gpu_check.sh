#!/usr/bin/env bash
# GPU acceptance check for one GPU node (under ten minutes): after the README's GPU install,
#   bash bench/gpu_check.sh
# runs, on the tiny from-scratch model and a few steps each,
#   1. the local engine on CUDA (SFT -> eval -> GRPO -> eval),
#   2. verl FSDP on CUDA: verl's SFT trainer (torchrun, NCCL) and verl's GRPO loop (main_ppo,
#      vLLM rollouts, the project's reward), eval of both,
# and prints what passed. Every run writes under $R360_ROOT (default: a fresh temp dir).
# NOT YET RUN ON A GPU: written and checked on CPU machines only (bash -n, and the same sweeps with
# engine.device=cpu); the first run on a GPU node is its acceptance.
set -uo pipefail
cd "$(dirname "$0")/.."
root=${R360_ROOT:-$(mktemp -d /tmp/r360-gpu-check.XXXXXX)}
export R360_ROOT=$root PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log=$root/gpu_check.log
declare -A result
t_start=$(date +%s)

step() {   # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "[gpu-check] $name: $*" | tee -a "$log"
  if timeout "$limit" "$@" >>"$log" 2>&1; then result[$name]="PASS ($(( $(date +%s) - t0 )) s)"
  else result[$name]="FAIL (exit $?, $(( $(date +%s) - t0 )) s; see $log)"; fi
}

step cuda 60 python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
step imports 120 python -c "import verl, vllm; print('verl', verl.__version__, 'vllm', vllm.__version__)"

SMALL=(+grid=smoke grid.backtracks=[0] launcher.workers=1 sft.max_steps=20 sft.save_every=10
       rl.steps=3 rl.save_every=1 rl.val_every=0 rl.batch_size=8 rl.mini_batch_size=8)
step local_engine_cuda 240 python sweep.py "${SMALL[@]}" engine=local engine.device=cuda sweep.name=gpu-local
# flash-attn is optional: verl's default attention is flash_attention_2, sdpa works everywhere.
ATTN='+actor_rollout_ref.model.override_config.attn_implementation=sdpa'
step verl_fsdp_sft_grpo_vllm 480 python sweep.py "${SMALL[@]}" engine=verl_fsdp engine.device=cuda \
    engine.verl.n_gpus_per_node=1 engine.verl.gpu_memory_utilization=0.3 "engine.verl.overrides=[$ATTN]" \
    "engine.verl.sft_overrides=[+model.override_config.attn_implementation=sdpa]" sweep.name=gpu-verl

# What the runs left: verl's metrics bridged, checkpoints in the stage dirs, HF exports, DONE.
check_store() {
  python - "$root" <<'EOF'
import json, sys
from pathlib import Path
root = Path(sys.argv[1]) / "store"
ok = True
for kind in ("sft", "rl"):
    for d in sorted(root.glob(f"{kind}-*")):
        spec = (d / "spec.json").read_text()
        if "verl_fsdp" not in spec:
            continue
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
        done, model, ckpt = (d / "DONE").exists(), (d / "model" / "config.json").exists(), (d / "checkpoints").is_dir()
        key = "loss" if kind == "sft" else "reward_mean"
        print(f"{d.name}: DONE={done} model={model} checkpoints={ckpt} steps={[r['step'] for r in rows if key in r]}")
        ok &= done and model and ckpt and any(key in r for r in rows)
sys.exit(0 if ok else 1)
EOF
}
step verl_outputs 60 check_store

echo
echo "GPU check ($(( $(date +%s) - t_start )) s, runs in $root):"
fail=0
for name in cuda imports local_engine_cuda verl_fsdp_sft_grpo_vllm verl_outputs; do
  printf '  %-26s %s\n' "$name" "${result[$name]:-not run}"
  case "${result[$name]:-}" in PASS*) ;; *) fail=1 ;; esac
done
exit $fail
