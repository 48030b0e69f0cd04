"""The `data` stage: a task's problems, drawn once per (task, params, sizes, seed) and split into
sft problems / train / val / test (verl's parquet schema), shared by every point of a sweep, so
every point is evaluated on the same test set."""

from __future__ import annotations

from typing import Any

from .base import Role, StageKind, base_runtime


def spec(c: dict[str, Any]) -> dict[str, Any]:
    d, task = c["data"], c["task"]
    return {"kind": "data", "task": task["name"], "params": task["params"][c["scale_name"]],
            "sizes": {s: d[f"{s}_size"] for s in ("sft", "train", "val", "test")}
            | ({} if task["backtrack_sft"] else {"sft": 0}),   # RL-only: no SFT problems
            "template": d["template"], "seed": d["seed"]}


def generation_runtime(c: dict[str, Any]) -> dict[str, Any]:
    """Problems and traces are generated over `threads` processes (engine.threads; 0: every
    core the stage gets, e.g. the data stage's Slurm CPUs)."""
    return {**base_runtime(c), "threads": c["engine"]["threads"]}


def workers(ctx) -> int:
    from ..cores import usable_cores

    threads = int(ctx.runtime["threads"])
    return threads if threads > 0 else usable_cores()


def run(ctx) -> dict[str, Any]:
    from ..tasks import build_data

    return build_data(ctx.spec, ctx.stage_dir, show_progress=ctx.show_progress, workers=workers(ctx))


KIND = StageKind(
    name="data", inputs={}, run="reasoning360.stages.data:run", runtime=generation_runtime,
    roles=(Role("data", (), lambda c, p, ids: spec(c)),))
