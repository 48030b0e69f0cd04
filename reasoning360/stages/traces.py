"""The `traces` stage: SFT traces with exactly k backtracks for the data stage's SFT problems,
written by the task's search program (not sampled from a model)."""

from __future__ import annotations

from typing import Any

from .base import Role, StageKind
from .data import generation_runtime, workers
from .distill import teacher_k


def spec(c: dict[str, Any], data_id: str, k: int) -> dict[str, Any]:
    return {"kind": "traces", "task": c["task"]["name"], "data": data_id, "k": k,
            "style": c["data"]["trace_style"], "seed": c["data"]["seed"]}


def build(c: dict[str, Any], p, ids: dict[str, str]) -> dict[str, Any] | None:
    """A k point's traces, or the traces of a distill baseline's teacher (this sweep's SFT model
    on k-backtrack traces)."""
    k = p.k if p.k is not None else teacher_k(c, p.baseline)
    return None if k is None else spec(c, ids["data"], k)


def run(ctx) -> dict[str, Any]:
    from ..tasks import build_traces

    return build_traces(ctx.spec, ctx.deps["data"], ctx.stage_dir, show_progress=ctx.show_progress,
                        workers=workers(ctx))


KIND = StageKind(
    name="traces", inputs={"data": "data"}, run="reasoning360.stages.traces:run", runtime=generation_runtime,
    roles=(Role("traces", ("data",), build),))
