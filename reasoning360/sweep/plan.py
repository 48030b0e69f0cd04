"""The plan: every point of the grid becomes its stages, one per role of the stage-kind registry
(reasoning360.stages: data -> traces -> sft -> sft_eval, rl -> rl_eval, plus the distill
baselines' teacher and distill roles), each with the spec its kind builds.

A stage's spec holds exactly what determines its output (upstream stage ids included), so its
id is its content address: points that share a stage share one directory and one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import stages
from .grid import Point
from .identity import stage_id


@dataclass
class Stage:
    id: str
    kind: str
    spec: dict[str, Any]             # {} for a plan read back from plan.json (the store has it)
    runtime: dict[str, Any]
    deps: dict[str, str]             # ctx.deps name ("data", "traces", "init", ...) -> upstream stage id
    points: list[str] = field(default_factory=list)


@dataclass
class PointPlan:
    point: Point
    stages: dict[str, str]          # role -> stage id (roles absent for a point are missing)

    @property
    def name(self) -> str:
        return self.point.name


@dataclass
class Plan:
    points: list[PointPlan]
    stages: dict[str, Stage]        # unique stages, in dependency order

    def children(self) -> dict[str, set[str]]:
        """Stage id -> the stages that take it as an input."""
        out: dict[str, set[str]] = {sid: set() for sid in self.stages}
        for sid, st in self.stages.items():
            for dep in st.deps.values():
                if dep in out:
                    out[dep].add(sid)
        return out


def plan(points: Iterable[Point], sweep_name: str = "") -> Plan:
    plans, unique = [], {}
    pipeline = stages.roles()
    for p in points:
        c = p.cfg
        ids: dict[str, str] = {}
        for role, kind_name in pipeline:
            spec = role.build(c, p, ids)
            if spec is None:
                continue
            sid = stage_id(spec)
            if sid not in unique:
                kind = stages.get(kind_name)
                rt = {**kind.runtime(c), "run_name": p.name, "group": sweep_name}
                unique[sid] = Stage(sid, kind_name, spec, rt, kind.deps_of(spec))
            unique[sid].points.append(p.name)
            ids[role.name] = sid
        plans.append(PointPlan(p, ids))
    return Plan(plans, unique)
