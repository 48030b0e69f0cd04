"""The `eval` stage: a checkpoint (or the base model) answers the held-out split; every answer is
scored by the task's verifier (items.parquet) and summarised. Two roles: `sft_eval` (before RL:
the SFT model, or the base model for cold start) and `rl_eval` (after RL)."""

from __future__ import annotations

from typing import Any

from .base import Role, StageKind, engine_needs_ray, engine_run, engine_runtime, rollout_runtime
from .sft import engine_overrides


def spec(c: dict[str, Any], data_id: str, checkpoint_id: str | None, steps: list[int | None],
         final_step: int) -> dict[str, Any]:
    """`steps`: which models of the upstream stage to evaluate, in order: None for its final
    model (step `final_step`), N for the model it kept at step N. The model config is part of
    the spec even for a checkpoint (its architecture and tokenizer settings say how to load it),
    so an engine never reads an upstream stage's spec."""
    s = {"kind": "eval", "engine": c["engine"]["name"], "task": c["task"]["name"],
         "data": data_id, "checkpoint": checkpoint_id, "steps": steps, "final_step": final_step,
         "model": c["model"], "eval": c["eval"],
         "rollout_backend": c["rollout"]["backend"], **engine_overrides(c, "overrides")}
    if checkpoint_id is None:      # the base model itself (cold start's "before RL"): seeded if random
        s["seed"] = c["seed"]
    return s


def build_sft_eval(c: dict[str, Any], p, ids: dict[str, str]) -> dict[str, Any]:
    """Before RL: the model RL starts from (the SFT model, its snapshot at rl.init_step, or, for
    cold start, the base model)."""
    if "sft" not in ids:
        return spec(c, ids["data"], ids.get("base"), [None], 0)
    init = c["rl"]["init_step"]
    return spec(c, ids["data"], ids["sft"], [init], c["sft"]["max_steps"])


def build_rl_eval(c: dict[str, Any], p, ids: dict[str, str]) -> dict[str, Any]:
    """After RL: its final model, and the models it kept at rl.eval_steps (the steps the paper
    evaluated), in step order."""
    steps = sorted(s for s in c["rl"]["eval_steps"] if s < c["rl"]["steps"])
    return spec(c, ids["data"], ids["rl"], [*steps, None], c["rl"]["steps"])


run = engine_run("run_eval")


KIND = StageKind(
    name="eval", inputs={"data": "data", "checkpoint": "init"}, run="reasoning360.stages.eval:run",
    needs_ray=engine_needs_ray("eval"), runtime=lambda c: {**engine_runtime(c), **rollout_runtime(c)},
    roles=(Role("sft_eval", ("data", "base", "sft"), build_sft_eval),
           Role("rl_eval", ("data", "rl"), build_rl_eval)))
