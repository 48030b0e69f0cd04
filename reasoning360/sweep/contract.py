"""Where a config key lands, found by trying it: change the value, plan again, compare.

The planner copies config into stage specs (hashed) and runtimes (unhashed) by hand, stage kind
by stage kind, so "does this key reach a stage?" is answered by observation rather than by a
list that could drift: `effect(c, key)` perturbs one leaf and reports what changed — some
stage's spec, some stage's runtime, the grid's points — or None when nothing did.

`python sweep.py` uses it to refuse an override that no stage of *this* sweep reads (e.g.
`distill.temperature=0.5` in a grid without distilled baselines, `rollout.vllm.dtype=...` with
the builtin backend, `sweep.fail_fast` under Slurm), so the experiment that runs is the one the
user typed; the contract test walks every leaf of the composed config with it.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterator

from .grid import GridError, expand
from .plan import plan as make_plan
from .schema import ConfigError, scope_of


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; lists and empty mappings are leaves."""
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


def get(c: dict, key: str) -> Any:
    node: Any = c
    for part in key.split("."):
        node = node[part]
    return node


def _set(c: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = c
    for part in parents:
        node = node[part]
    node[last] = value


def perturb(value: Any) -> Any:
    """A different value of the same kind (validity is not the point: only where it lands)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return value[:-1] if value else [1]
    if isinstance(value, dict):
        return {**value, "_x": 1}
    return "x"                      # None


def observe(c: dict, representative: bool = True) -> dict[str, Any]:
    """What the plan of `c` is made of: point names, and per point and role its stage's spec and
    runtime (JSON), so any change anywhere shows. `representative`: one point per (task,
    variant), enough to see every key and fast on big grids."""
    cc = copy.deepcopy(c)
    try:
        if representative:
            cc["grid"] = {**cc["grid"], "seeds": cc["grid"]["seeds"][:1]}
            if cc["grid"]["axes"]:
                cc["grid"]["axes"] = {k: v[:1] for k, v in cc["grid"]["axes"].items()}
        p = make_plan(expand(cc), cc["sweep"]["name"])
    except (GridError, KeyError, TypeError, ValueError, AttributeError) as e:   # a value the plan cannot take
        return {"error": f"{type(e).__name__}: {e}"}
    out: dict[str, Any] = {"points": [pp.name for pp in p.points], "specs": {}, "runtimes": {}}
    for pp in p.points:
        for role, sid in pp.stages.items():
            st = p.stages[sid]
            out["specs"][(pp.name, role)] = json.dumps(st.spec, sort_keys=True, default=str)
            out["runtimes"][(pp.name, role)] = json.dumps(
                {k: v for k, v in st.runtime.items() if k not in ("run_name", "group")}, sort_keys=True, default=str)
    return out


def effect(c: dict, key: str, base: dict[str, Any] | None = None) -> str | None:
    """Where a change of `key` lands in the plan of `c`: "spec", "runtime", "points", or None."""
    base = base if base is not None else observe(c)
    value = get(c, key)
    if isinstance(value, dict) and value:             # a whole section: its first leaf stands for it
        sub, value = next(leaves(value))
        key = f"{key}.{sub}"
    cc = copy.deepcopy(c)
    _set(cc, key, perturb(value))
    new = observe(cc)
    if "error" in base or "error" in new:
        return "points" if base != new else None
    if new["points"] != base["points"]:
        return "points"
    if new["specs"] != base["specs"]:
        return "spec"
    if new["runtimes"] != base["runtimes"]:
        return "runtime"
    return None


def override_key(override: str) -> str | None:
    """The dotted key an override sets (None for a group choice such as `model=tiny` or
    `+grid=smoke`, and for deletions)."""
    if override.startswith("~") or "=" not in override:
        return None
    return override.lstrip("+").split("=", 1)[0]


def refuse_inert(c: dict, overrides: list[str], launcher_reads: tuple[str, ...]) -> None:
    """ConfigError for the first override that no stage of this sweep reads and the launcher
    does not read either: it would change nothing, silently."""
    base = None
    for o in overrides:
        key = override_key(o)
        if key is None or "." not in key and not _is_leaf(c, key):
            continue                                   # a group choice (engine=verl_fsdp) or a whole section
        try:
            get(c, key)
        except (KeyError, TypeError):
            continue                                   # not in the config: the schema already said so
        scope = scope_of(key)
        if scope == "grid":
            continue
        if scope == "launcher":
            if not any(key == r or key.startswith(r + ".") for r in launcher_reads):
                raise ConfigError(f"{key}: launcher={c['launcher']['name']} does not read it "
                                  "(the override would change nothing)")
            continue
        if base is None:
            base = observe(c)
        if effect(c, key, base) is None:
            raise ConfigError(f"{key}: no stage of this sweep reads it (grid {c['grid']['name']}: "
                              f"{_why(c, key)}); the override would change nothing")


def _is_leaf(c: dict, key: str) -> bool:
    try:
        return not isinstance(get(c, key), dict)
    except (KeyError, TypeError):
        return False


def _why(c: dict, key: str) -> str:
    section = key.split(".")[0]
    if section == "distill":
        return "no distilled baseline in grid.baselines"
    if key.startswith("rollout.vllm"):
        return f"rollout.backend={c['rollout']['backend']}"
    if section == "tasks":
        parts = key.split(".")
        if parts[1] not in c["grid"]["tasks"]:
            return f"grid.tasks={c['grid']['tasks']}"
        if len(parts) > 3 and parts[2] in ("params", "k_values") and parts[3] != c["scale_name"]:
            return f"scale={c['scale_name']}"
        if parts[2] == "k_values":
            return "grid.backtracks is a list, not `task`"
    return "no stage of its plan uses this key"
