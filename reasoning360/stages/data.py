"""The `data` stage: a task's problems, drawn once per (task, params, sizes, seed) and split into
sft problems / train / val / test (verl's parquet schema), shared by every point of a sweep, so
every point is evaluated on the same test set."""

from __future__ import annotations

from typing import Any

from .base import Role, StageKind


def spec(c: dict[str, Any]) -> dict[str, Any]:
    d, task = c["data"], c["task"]
    return {"kind": "data", "task": task["name"], "params": task["params"][c["scale_name"]],
            "sizes": {s: d[f"{s}_size"] for s in ("sft", "train", "val", "test")}
            | ({} if task["backtrack_sft"] else {"sft": 0}),   # RL-only: no SFT problems
            "template": d["template"], "seed": d["seed"]}


def run(ctx) -> dict[str, Any]:
    from ..tasks import build_data

    return build_data(ctx.spec, ctx.stage_dir, show_progress=ctx.show_progress)


KIND = StageKind(
    name="data", inputs={}, run="reasoning360.stages.data:run",
    roles=(Role("data", (), lambda c, p, ids: spec(c)),))
