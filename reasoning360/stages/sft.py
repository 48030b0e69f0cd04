"""The `sft` stage: supervised fine-tuning by the configured engine. It takes two roles in a
point's pipeline: `sft` (the point's own SFT: k-backtrack traces, or a distill baseline's
graded split) and `teacher` (the k-backtrack SFT model that answers a distill baseline's
problems; the same stage as that k point's `sft` when the grid has it)."""

from __future__ import annotations

from typing import Any

from .base import Role, StageKind, engine_needs_ray, engine_run, engine_runtime
from .distill import DISTILL_BASELINES, teacher_k, teacher_of


def spec(c: dict[str, Any], traces_id: str, data_id: str, base_id: str | None,
         traces_file: str | None = None) -> dict[str, Any]:
    """`base_id`: the pretrain stage whose model SFT starts from (None: model.path, or a random
    init); `traces_file`: which parquet of the upstream stage to train on (a distill stage's
    split; absent for k-backtrack traces, `sft.parquet`)."""
    return {"kind": "sft", "engine": c["engine"]["name"], "task": c["task"]["name"],
            "traces": traces_id, "data": data_id, "init": base_id, "model": c["model"], "sft": c["sft"],
            "seed": c["seed"], **({"traces_file": traces_file} if traces_file else {}),
            **engine_overrides(c, "sft_overrides")}


def engine_overrides(c: dict[str, Any], key: str) -> dict[str, Any]:
    """Pass-through engine keys (e.g. engine.verl.overrides) change the output, so they are
    hashed; present only when set, so every other stage keeps its id."""
    value = c["engine"]["verl"][key] if "verl" in c["engine"] else None
    return {"engine_verl": {key: list(value)}} if value else {}


def build_teacher(c: dict[str, Any], p, ids: dict[str, str]) -> dict[str, Any] | None:
    return spec(c, ids["traces"], ids["data"], ids.get("base")) if teacher_k(c, p.baseline) is not None else None


def build_sft(c: dict[str, Any], p, ids: dict[str, str]) -> dict[str, Any] | None:
    if p.k is not None:
        return spec(c, ids["traces"], ids["data"], ids.get("base"))
    if p.baseline in DISTILL_BASELINES:
        return spec(c, ids["distill"], ids["data"], ids.get("base"), f"{teacher_of(c, p.baseline)['split']}.parquet")
    return None                   # cold start: RL from the base model


def total_steps(s: dict[str, Any]) -> int:
    return int(s["sft"]["max_steps"])


run = engine_run("run_sft")


KIND = StageKind(
    name="sft", inputs={"traces": "traces", "data": "data", "init": "init"}, run="reasoning360.stages.sft:run",
    total_steps=total_steps, needs_ray=engine_needs_ray("sft"), runtime=engine_runtime,
    roles=(Role("teacher", ("traces", "base"), build_teacher), Role("sft", ("traces", "distill", "base"), build_sft)))
