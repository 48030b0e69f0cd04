"""Rollouts: one interface (base.RolloutEngine), backends in a lazy registry (registry.BACKENDS:
builtin KV-cache sampler, vLLM), and a Ray pool that spreads any backend over N actors.

    engine = make_rollout_engine(rollout_cfg, model, tokenizer)   # configs/rollout/*.yaml
    out = engine.generate(prompt_ids, SamplingParams(...)); engine.update_weights(sd); engine.close()
"""

from __future__ import annotations

from typing import Any

from .base import Completion, RolloutEngine, RolloutOutput, SamplingParams
from .registry import BACKENDS, backend_class, make_backend

__all__ = ["Completion", "RolloutEngine", "RolloutOutput", "SamplingParams", "BACKENDS",
           "make_rollout_engine", "backend_class"]


def make_rollout_engine(rollout_cfg: dict[str, Any], model, tokenizer, device: str | None = None) -> RolloutEngine:
    """The engine configs/rollout describes: `backend` in this process, or, with `workers` > 0,
    that backend in `workers` Ray actors of `threads_per_worker` threads each (the job's Ray
    cluster when RAY_ADDRESS is set). Every key is read strictly: the config holds them all."""
    backend, workers = rollout_cfg["backend"], int(rollout_cfg["workers"])
    settings = rollout_cfg["vllm"] if backend == "vllm" else None
    backend_class(backend)       # an unknown name fails here, before any actor starts
    if workers > 0:
        from .ray_pool import RayRolloutPool

        return RayRolloutPool(model, tokenizer, workers, backend=backend, settings=settings,
                              threads_per_worker=int(rollout_cfg["threads_per_worker"]), device=device)
    return make_backend(backend, model, tokenizer, settings)
