"""What a stage kind is: how it enters a point's plan, what it runs, how long it is, what it needs.

A stage *kind* (data, traces, sft, rl, eval, ...) is one module in this package defining `KIND`,
plus one line in reasoning360.stages.KINDS. The kind declares:

    roles        the positions it takes in a point's pipeline, each with the roles it comes
                 after and a spec builder `(point config, point, role -> stage id) -> spec | None`
                 (None: the role is absent for this point, e.g. no SFT for cold start)
    inputs       spec field -> the name the stage's code sees the upstream directory under
                 (ctx.deps), e.g. {"data": "data", "init": "init"}
    run          the stage's code: StageContext -> JSON-able summary (imported lazily)
    runtime      point config -> the runtime knobs its stages read (how they run, not what they
                 produce: recorded beside the spec, not hashed); every kind gets `tracking`
    total_steps  spec -> the steps its metrics.jsonl will reach (None: no step count)
    needs_ray    (spec, runtime) -> whether its job must start a Ray cluster
    resources    which `launcher.resources.<name>` entry sizes its Slurm jobs

A spec holds exactly what determines the stage's output (upstream stage ids included), so its
hash is the stage's id: points that need the same stage share one directory and one run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Role:
    name: str
    after: tuple[str, ...]
    build: Callable[[dict[str, Any], Any, dict[str, str]], "dict[str, Any] | None"]


def base_runtime(c: dict[str, Any]) -> dict[str, Any]:
    return {"tracking": c["tracking"]}


def engine_runtime(c: dict[str, Any]) -> dict[str, Any]:
    """What an engine stage (sft, rl, eval) needs to run: device and threads, and the verl
    engine's own settings for verl stages."""
    e = c["engine"]
    return {**base_runtime(c), "device": e["device"], "threads": e["threads"],
            **({"engine": {"name": e["name"], "verl": e["verl"]}} if "verl" in e else {})}


def rollout_runtime(c: dict[str, Any]) -> dict[str, Any]:
    """How rollouts are generated (configs/rollout): Ray workers, and vLLM's engine settings
    when the backend is vLLM."""
    r = c["rollout"]
    return {"rollout_workers": r["workers"], "rollout_threads_per_worker": r["threads_per_worker"],
            **({"rollout_vllm": r["vllm"]} if r["backend"] == "vllm" else {})}


def engine_run(method: str) -> Callable[..., dict[str, Any]]:
    """The run function of a stage kind the spec's engine runs (`run_sft`, `run_grpo`, `run_eval`)."""
    def run(ctx) -> dict[str, Any]:
        from ..engines import get_engine

        return getattr(get_engine(ctx.spec["engine"]), method)(ctx)
    return run


def engine_needs_ray(kind: str) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    """Whether the spec's engine needs a Ray cluster for a stage of this kind (it says so)."""
    def needs(spec: dict[str, Any], runtime: dict[str, Any]) -> bool:
        from ..engines import get_engine

        return get_engine(spec["engine"]).needs_ray(kind, spec, runtime)
    return needs


def _no_steps(spec: dict[str, Any]) -> int | None:
    return None


def _no_ray(spec: dict[str, Any], runtime: dict[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class StageKind:
    name: str
    roles: tuple[Role, ...]
    inputs: dict[str, str]
    run: str                                   # "module:function", imported when the stage runs
    total_steps: Callable[[dict[str, Any]], int | None] = _no_steps
    needs_ray: Callable[[dict[str, Any], dict[str, Any]], bool] = _no_ray
    runtime: Callable[[dict[str, Any]], dict[str, Any]] = base_runtime
    resources: str = ""                        # launcher.resources key; "" = the kind's name
    doc: str = field(default="", compare=False)

    @property
    def resource_key(self) -> str:
        return self.resources or self.name

    def runner(self) -> Callable[..., dict[str, Any]]:
        module, fn = self.run.split(":")
        return getattr(importlib.import_module(module), fn)

    def deps_of(self, spec: dict[str, Any]) -> dict[str, str]:
        """ctx.deps name -> upstream stage id, for the inputs this spec names."""
        return {role: spec[f] for f, role in self.inputs.items() if spec.get(f)}
