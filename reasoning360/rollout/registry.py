"""Rollout backends by name, imported lazily (as verl's rollout registry): a backend's heavy
dependencies (vLLM) load only when it is asked for. A new backend is one module with a class
`(model, tokenizer, settings)` implementing RolloutEngine, plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

from .base import RolloutEngine

BACKENDS: dict[str, str] = {
    "builtin": "reasoning360.rollout.builtin:BuiltinRollout",
    "vllm": "reasoning360.rollout.vllm:VLLMRollout",
}


class UnknownBackend(ValueError):
    pass


def backend_class(name: str):
    if name not in BACKENDS:
        raise UnknownBackend(f"rollout.backend: unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_backend(name: str, model, tokenizer, settings: dict[str, Any] | None) -> RolloutEngine:
    """One engine of backend `name` in this process; `settings` is the backend's own block
    (rollout.vllm for vLLM)."""
    return backend_class(name)(model, tokenizer, settings)
