"""The stage graph: each point becomes data -> traces -> sft -> rl with evals after sft and rl.

A distill baseline replaces traces with a distill stage (a teacher's graded answers); when
the teacher is this sweep's own SFT model on k-backtrack traces, that model's stages are its
upstream (shared with the k point when the grid has it).

A stage's spec holds exactly what determines its output (upstream stage ids included), so
its id is its content address: points that share a stage share one directory and one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .grid import DISTILL_BASELINES, Point, teacher_of
from .identity import stage_id

# Roles of a point's stages in the order they run. `sft_eval` is the accuracy before RL
# (for cold start: the base model's); `rl_eval` the accuracy after RL.
# A distill baseline whose teacher is this sweep's SFT model on k-backtrack traces lists that
# model's stages as its `traces` and `teacher` (so launchers and `r360 status` see them).
ROLES = ("data", "traces", "teacher", "distill", "sft", "sft_eval", "rl", "rl_eval")
# Spec fields that name an upstream stage, and the role the engine sees it under.
DEP_FIELDS = {"data": "data", "traces": "traces", "init": "init", "checkpoint": "init", "teacher": "teacher"}


@dataclass
class Stage:
    id: str
    kind: str
    spec: dict[str, Any]
    runtime: dict[str, Any]
    points: list[str] = field(default_factory=list)

    @property
    def deps(self) -> dict[str, str]:
        """role -> upstream stage id."""
        return deps_of(self.spec)


def deps_of(spec: dict[str, Any]) -> dict[str, str]:
    return {role: spec[f] for f, role in DEP_FIELDS.items() if spec.get(f)}


@dataclass
class PointPlan:
    point: Point
    stages: dict[str, str]          # role -> stage id (roles absent for baselines)

    @property
    def name(self) -> str:
        return self.point.name


@dataclass
class Plan:
    points: list[PointPlan]
    stages: dict[str, Stage]        # unique stages, in dependency order

    def by_kind(self) -> dict[str, list[Stage]]:
        out: dict[str, list[Stage]] = {}
        for s in self.stages.values():
            out.setdefault(s.kind, []).append(s)
        return out


def plan(points: Iterable[Point], sweep_name: str = "") -> Plan:
    plans, stages = [], {}

    def add(spec: dict[str, Any], runtime: dict[str, Any], point: Point) -> str:
        sid = stage_id(spec)
        if sid not in stages:
            stages[sid] = Stage(sid, spec["kind"], spec, runtime)
        stages[sid].points.append(point.name)
        return sid

    for p in points:
        c = p.cfg
        rt = runtime_of(c, p, sweep_name)
        ids: dict[str, str] = {}
        ids["data"] = add(data_spec(c), rt, p)
        if p.k is not None:
            ids["traces"] = add(traces_spec(c, ids["data"], p.k), rt, p)
            ids["sft"] = add(sft_spec(c, ids["traces"], ids["data"]), rt, p)
        elif p.baseline in DISTILL_BASELINES:
            t = teacher_of(c, p.baseline)
            if not t["path"]:                   # this sweep's own SFT model on k-backtrack traces
                ids["traces"] = add(traces_spec(c, ids["data"], t["sft_k"]), rt, p)
                ids["teacher"] = add(sft_spec(c, ids["traces"], ids["data"]), rt, p)
            ids["distill"] = add(distill_spec(c, ids["data"], ids.get("teacher"), t), rt, p)
            ids["sft"] = add(sft_spec(c, ids["distill"], ids["data"], f"{t['split']}.parquet"), rt, p)
        ids["sft_eval"] = add(eval_spec(c, ids["data"], ids.get("sft")), rt, p)
        ids["rl"] = add(rl_spec(c, ids["data"], ids.get("sft")), rt, p)
        ids["rl_eval"] = add(eval_spec(c, ids["data"], ids["rl"]), rt, p)
        plans.append(PointPlan(p, ids))
    return Plan(plans, stages)


def data_spec(c: dict) -> dict:
    d, task = c["data"], c["task"]
    return {"kind": "data", "task": task["name"], "params": task["params"][c["scale_name"]],
            "sizes": {s: d[f"{s}_size"] for s in ("sft", "train", "val", "test")}
            | ({} if task.get("backtrack_sft", True) else {"sft": 0}),   # RL-only: no SFT problems
            "template": d["template"], "seed": d["seed"]}


def traces_spec(c: dict, data_id: str, k: int) -> dict:
    return {"kind": "traces", "task": c["task"]["name"], "data": data_id, "k": k,
            "style": c["data"]["trace_style"], "seed": c["data"]["seed"]}


def sft_spec(c: dict, traces_id: str, data_id: str, traces_file: str | None = None) -> dict:
    """`traces_file`: which parquet of the traces stage to train on (a distill stage's split);
    absent for k-backtrack traces (`sft.parquet`), so their ids never change."""
    return {"kind": "sft", "engine": c["engine"]["name"], "task": c["task"]["name"],
            "traces": traces_id, "data": data_id, "model": c["model"], "sft": c["sft"],
            "seed": c["seed"], **({"traces_file": traces_file} if traces_file else {}),
            **_engine_overrides(c, "sft_overrides")}


def distill_spec(c: dict, data_id: str, teacher_id: str | None, t: dict) -> dict:
    """A teacher's graded answers to the SFT problems. What changes the samples is hashed;
    how they are fetched (server settings, concurrency) is runtime."""
    d = c["distill"]
    return {"kind": "distill", "task": c["task"]["name"], "data": data_id, "teacher": teacher_id,
            "teacher_path": None if teacher_id else str(Path(str(t["path"])).expanduser().resolve()), "source": t["source"],
            "problems": d["problems"], "backend": d["backend"], "batch_size": d["batch_size"],
            "sampling": {"n": d["n"], "temperature": d["temperature"], "top_p": d["top_p"],
                         "max_new_tokens": t["max_new_tokens"], "rejection": bool(d["rejection"])},
            "seed": c["data"]["seed"]}


def _engine_overrides(c: dict, key: str) -> dict:
    """Pass-through engine keys (e.g. engine.verl.overrides) change the output, so they are
    hashed; present only when set, so every other stage keeps its id."""
    value = (c["engine"].get("verl") or {}).get(key)
    return {"engine_verl": {key: list(value)}} if value else {}


def rl_spec(c: dict, data_id: str, init_id: str | None) -> dict:
    return {"kind": "rl", "engine": c["engine"]["name"], "task": c["task"]["name"],
            "data": data_id, "init": init_id, "model": c["model"], "rl": c["rl"],
            "rollout_backend": c["rollout"]["backend"], "seed": c["seed"],
            **_engine_overrides(c, "overrides")}


def eval_spec(c: dict, data_id: str, checkpoint_id: str | None) -> dict:
    spec = {"kind": "eval", "engine": c["engine"]["name"], "task": c["task"]["name"],
            "data": data_id, "checkpoint": checkpoint_id, "eval": c["eval"],
            "rollout_backend": c["rollout"]["backend"], **_engine_overrides(c, "overrides")}
    if checkpoint_id is None:      # the base model itself (cold start's "before RL")
        spec["model"] = c["model"]
        spec["seed"] = c["seed"]
    return spec


def runtime_of(c: dict, p: Point, sweep_name: str) -> dict:
    """Knobs that change how a stage runs, not what it produces (not hashed)."""
    return {"device": c["engine"].get("device", "auto"), "threads": c["engine"].get("threads", 0),
            "rollout_workers": c["rollout"].get("workers", 0),
            "rollout_threads_per_worker": c["rollout"].get("threads_per_worker", 1),
            "rollout_vllm": c["rollout"].get("vllm"), "tracking": c["tracking"],
            "distill": c.get("distill"),
            "engine": c["engine"],
            "run_name": p.name, "group": sweep_name}
