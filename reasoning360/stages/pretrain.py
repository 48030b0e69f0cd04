"""The `pretrain` stage: the base model of a sweep that trains from scratch (scale=cpu), shared by
every point of the sweep, cold start included.

Why: a model trained from scratch never writes a well-formed answer, so RL from it ("cold start")
gets reward 0 everywhere and no gradient. The paper's base, Qwen2.5-3B-Instruct, knows the
answer format and the task's language but does not search. The stand-in: the tiny model trained
on the task's language without search — each SFT problem with `pretrain.attempts` attempted
solutions, each stating its verdict, none backtracking (reasoning360.tasks: Task.attempt) — so
it writes well-formed answers at a low accuracy that RL can raise. At scale=paper the base is
`model.path` and there is no pretrain stage (`pretrain.train.max_steps: 0`).

The stage writes the corpus (`pretrain.parquet`, resumable like the traces) and trains on it with
the engine's SFT loop; its `model/` is what the k points' SFT, the teachers and cold start's RL
start from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Role, StageKind, engine_needs_ray, engine_runtime

CORPUS = "pretrain.parquet"


def spec(c: dict[str, Any], data_id: str) -> dict[str, Any] | None:
    pt = c["pretrain"]
    if pt["train"]["max_steps"] == 0:       # no pretraining: the base is model.path (or the random init)
        return None
    return {"kind": "pretrain", "engine": c["engine"]["name"], "task": c["task"]["name"], "data": data_id,
            # the SFT problems; an RL-only task has none: its RL prompts (never a test problem)
            "split": "sft" if c["task"]["backtrack_sft"] else "train",
            "attempts": pt["attempts"], "style": c["data"]["trace_style"], "model": c["model"],
            "sft": pt["train"], "seed": c["data"]["seed"]}       # one base for every training seed


def run(ctx) -> dict[str, Any]:
    import dataclasses

    from ..engines import get_engine
    from ..tasks.data import build_attempts
    from .data import workers

    s = ctx.spec
    corpus = build_attempts({"kind": "pretrain", "task": s["task"], "split": s["split"], "attempts": s["attempts"],
                             "style": s["style"], "seed": s["seed"]},
                            ctx.deps["data"], ctx.stage_dir, show_progress=ctx.show_progress, workers=workers(ctx))
    train = dataclasses.replace(ctx, spec={**s, "kind": "sft", "traces_file": CORPUS},
                                deps={"traces": Path(ctx.stage_dir)})
    summary = get_engine(s["engine"]).run_sft(train)
    return {**summary, "corpus": corpus}


KIND = StageKind(
    name="pretrain", inputs={"data": "data"}, run="reasoning360.stages.pretrain:run",
    total_steps=lambda s: int(s["sft"]["max_steps"]), needs_ray=engine_needs_ray("sft"),
    runtime=lambda c: {**engine_runtime(c), "threads": c["engine"]["threads"]}, resources="sft",
    roles=(Role("base", ("data",), lambda c, p, ids: spec(c, ids["data"])),))
