"""The local engine: SFT, GRPO and eval in torch + transformers on CPU or one GPU.

The stage runner calls exactly `run_sft(ctx)`, `run_grpo(ctx)`, `run_eval(ctx)`; each returns a
JSON-able summary. Modules: tokenizer (char tokenizer), model (build/load, device), data
(parquet, prompts, batch orders), losses (verl's GRPO math), checkpoint (atomic save/resume),
sft, grpo, evaluate. Rollouts come from reasoning360.rollout.
"""

from __future__ import annotations

import os
from typing import Any

# With fewer free cores than threads (other jobs on the node), OpenMP's default busy-waiting
# made a training step 10x slower on a 2-core machine; passive waiting costs ~nothing. Only
# effective if set before torch is first imported (job entry points should set it too).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def needs_ray(kind: str, spec: dict[str, Any], runtime: dict[str, Any]) -> bool:
    """GRPO with `rollout.workers` > 0 samples in Ray actors; everything else runs in-process."""
    return kind == "rl" and int(runtime["rollout_workers"]) > 0


def driver_cpus(kind: str, spec: dict[str, Any], runtime: dict[str, Any]) -> int:
    """The trainer computes in the stage's own process on the head: one of the head's CPUs stays
    out of Ray, so rollout workers go to the other nodes first."""
    return 1


def run_sft(ctx) -> dict[str, Any]:
    from .sft import run_sft as _run

    return _run(ctx)


def run_grpo(ctx) -> dict[str, Any]:
    from .grpo import run_grpo as _run

    return _run(ctx)


def run_eval(ctx) -> dict[str, Any]:
    from .evaluate import run_eval as _run

    return _run(ctx)


__all__ = ["needs_ray", "driver_cpus", "run_sft", "run_grpo", "run_eval"]
