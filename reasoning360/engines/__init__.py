"""Engines run the training and evaluation stages (sft, rl, eval). `local` is built in (torch +
transformers, CPU or one GPU); `verl_fsdp` / `verl_megatron` drive verl (GPUs; verl's CPU
platform for tests). Found by name in a lazy registry, so a machine without verl plans and
runs the local engine without importing it. A new engine is one package exposing:

    run_sft(ctx) / run_grpo(ctx) / run_eval(ctx) -> summary   (ctx: engines.context.StageContext)
    needs_ray(kind, spec, runtime) -> bool                    whether its job needs a Ray cluster

and optionally `driver_cpus(kind, spec, runtime) -> int`: CPUs of a multi-node job's head that
the stage's own process keeps out of the job's Ray cluster (without it: 1, the head's trainer).

plus one line in ENGINES.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ENGINES: dict[str, str] = {
    "local": "reasoning360.engines.local",
    "verl_fsdp": "reasoning360.engines.verl",
    "verl_megatron": "reasoning360.engines.verl",
}


class UnknownEngine(ValueError):
    pass


def get_engine(name: str) -> ModuleType:
    if name not in ENGINES:
        raise UnknownEngine(f"engine.name: unknown engine {name!r} (known: {', '.join(ENGINES)})")
    return importlib.import_module(ENGINES[name])
