"""The `rl` stage: GRPO by the configured engine, from the point's SFT model (or, for cold
start, from the base model)."""

from __future__ import annotations

from typing import Any

from .base import Role, StageKind, engine_needs_ray, engine_run, engine_runtime, rollout_runtime
from .sft import engine_overrides


def spec(c: dict[str, Any], data_id: str, init_id: str | None, from_sft: bool) -> dict[str, Any]:
    """`init_step` (rl.init_step) names the SFT model RL starts from; it is part of this spec only
    when RL starts from an SFT stage (cold start starts from the base model)."""
    return {"kind": "rl", "engine": c["engine"]["name"], "task": c["task"]["name"],
            "data": data_id, "init": init_id, "init_step": c["rl"]["init_step"] if from_sft else None,
            "model": c["model"], "rl": {k: v for k, v in c["rl"].items() if k != "init_step"},
            "rollout_backend": c["rollout"]["backend"], "seed": c["seed"],
            **engine_overrides(c, "overrides")}


def total_steps(s: dict[str, Any]) -> int:
    return int(s["rl"]["steps"])


run = engine_run("run_grpo")


KIND = StageKind(
    name="rl", inputs={"data": "data", "init": "init"}, run="reasoning360.stages.rl:run",
    total_steps=total_steps, needs_ray=engine_needs_ray("rl"),
    runtime=lambda c: {**engine_runtime(c), **rollout_runtime(c)},
    roles=(Role("rl", ("data", "base", "sft"),
                lambda c, p, ids: spec(c, ids["data"], ids.get("sft", ids.get("base")), "sft" in ids)),))
