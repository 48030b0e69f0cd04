"""Stage kinds, by name, in a lazy registry (base.StageKind says what a kind declares).

A new stage kind is one module defining `KIND` plus one line in KINDS (or `register(name,
module)` at run time): the plan then gives each point its roles, the runner runs it, the local
launcher schedules it, Slurm sizes its jobs by `launcher.resources.<resources>`, and status,
results and analysis list it — no other file changes.

Pipeline order (`roles()`): roles after the roles they name in `after`, ties broken by the
kind's place in KINDS, then by its own order of roles.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from .base import Role, StageKind

KINDS: dict[str, str] = {
    "data": "reasoning360.stages.data",
    "pretrain": "reasoning360.stages.pretrain",
    "traces": "reasoning360.stages.traces",
    "distill": "reasoning360.stages.distill",
    "sft": "reasoning360.stages.sft",
    "eval": "reasoning360.stages.eval",
    "rl": "reasoning360.stages.rl",
}


class UnknownKind(ValueError):
    pass


def register(name: str, module: str) -> None:
    """Add (or replace) a stage kind: `module` defines KIND with KIND.name == name."""
    KINDS[name] = module
    _clear()


def unregister(name: str) -> None:
    KINDS.pop(name, None)
    _clear()


def get(name: str) -> StageKind:
    if name not in KINDS:
        raise UnknownKind(f"unknown stage kind {name!r} (known: {', '.join(KINDS)})")
    return _load(name, KINDS[name])


@lru_cache(maxsize=None)
def _load(name: str, module: str) -> StageKind:
    kind = importlib.import_module(module).KIND
    if kind.name != name:
        raise UnknownKind(f"{module}.KIND is named {kind.name!r}, registered as {name!r}")
    return kind


def kinds() -> list[StageKind]:
    return [get(n) for n in KINDS]


@lru_cache(maxsize=None)
def _roles(names: tuple[str, ...]) -> tuple[tuple[Role, str], ...]:
    """(role, kind name) in pipeline order: a topological order of `after`."""
    cands = [(r, k.name, i, j) for i, k in enumerate(get(n) for n in names) for j, r in enumerate(k.roles)]
    known = {r.name for r, *_ in cands}
    out: list[tuple[Role, str]] = []
    placed: set[str] = set()
    while len(out) < len(cands):
        ready = [c for c in cands if c[0].name not in placed
                 and all(a in placed or a not in known for a in c[0].after)]
        if not ready:
            left = sorted(c[0].name for c in cands if c[0].name not in placed)
            raise UnknownKind(f"stage roles {left} wait for each other (a circle in `after`)")
        depth = {c[0].name: 1 + max((_depth(a, out) for a in c[0].after if a in placed), default=-1) for c in ready}
        r, kname, *_ = min(ready, key=lambda c: (depth[c[0].name], c[2], c[3]))
        out.append((r, kname))
        placed.add(r.name)
    return tuple(out)


def _depth(role: str, placed: list[tuple[Role, str]]) -> int:
    by = {r.name: r for r, _ in placed}
    d, stack = 0, [(role, 0)]
    while stack:
        name, k = stack.pop()
        d = max(d, k)
        stack += [(a, k + 1) for a in by[name].after if a in by]
    return d


def roles() -> tuple[tuple[Role, str], ...]:
    """Every role of every registered kind, in pipeline order, with its kind's name."""
    return _roles(tuple(KINDS))


def role_names() -> tuple[str, ...]:
    return tuple(r.name for r, _ in roles())


def _clear() -> None:
    _load.cache_clear()
    _roles.cache_clear()


__all__ = ["KINDS", "Role", "StageKind", "UnknownKind", "get", "kinds", "register", "roles",
           "role_names", "unregister"]
