"""A sweep's directory: its composed config, its plan (points -> stage ids) and results.

Everything a later command (`r360 status`, `resubmit`, `report`) needs is read back from
here and from the store, so a sweep can always be re-planned and resubmitted from disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .. import atomic, stages as kinds
from .plan import Plan, PointPlan, Stage
from .grid import Point
from .store import Store

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

PLAN = "plan.json"
CONFIG = "sweep.yaml"


class SweepDirError(ValueError):
    pass


def plan_record(plan: Plan, store: Store) -> dict[str, Any]:
    return {
        "store": str(store.root),
        "points": [{"name": pp.name, "task": pp.point.task, "k": pp.point.k,
                    "baseline": pp.point.baseline, "seed": pp.point.seed, "axes": pp.point.axes,
                    "stages": pp.stages} for pp in plan.points],
        "stages": {sid: {"kind": s.kind, "deps": s.deps, "points": s.points}
                   for sid, s in plan.stages.items()},
    }


def save(sweep_dir: Path, plan: Plan, store: Store, cfg: dict[str, Any], overwrite: bool = False) -> None:
    """Write sweep.yaml and plan.json; refuse to replace a different plan of the same name."""
    record = plan_record(plan, store)
    old = sweep_dir / PLAN
    if old.exists() and not overwrite:
        prev = json.loads(old.read_text())
        if _identity(prev) != _identity(record):
            raise SweepDirError(
                f"sweep.name: {sweep_dir} already holds a different sweep "
                f"({_first_difference(sweep_dir, cfg)}); pass sweep.name=NEW_NAME or sweep.overwrite=true")
    atomic.write_text(sweep_dir / CONFIG, yaml.safe_dump(cfg, sort_keys=False))
    atomic.write_json(old, record)


def _identity(record: dict) -> list:
    return sorted((p["name"], sorted(p["stages"].items())) for p in record["points"])


def _first_difference(sweep_dir: Path, cfg: dict) -> str:
    path = sweep_dir / CONFIG
    if not path.exists():
        return "its plan differs"
    old = yaml.safe_load(path.read_text())
    for key, a, b in _walk(old, cfg):
        if key.split(".")[0] not in ("sweep", "paths", "launcher", "cluster", "tracking"):
            return f"{key}: {a!r} -> {b!r}"
    return "its plan differs"


def _walk(a: Any, b: Any, prefix: str = ""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            yield from _walk(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip("."), a, b


def load_plan(sweep_dir: str | Path) -> tuple[Plan, Store]:
    """(plan, store) from plan.json alone: stage kinds and dependencies, not their specs (the
    store has those; StageDir.spec reads one when it is needed)."""
    path = Path(sweep_dir) / PLAN
    if not path.exists():
        raise SweepDirError(f"{sweep_dir}: not a sweep directory (no {PLAN})")
    rec = json.loads(path.read_text())
    stages = {sid: Stage(sid, s["kind"], {}, {}, dict(s["deps"]), s.get("points", []))
              for sid, s in rec["stages"].items()}
    # plan.json keeps a point's roles sorted by name; give them back in pipeline order, as planned
    # (a point's "first unfinished stage" means the same in every reader)
    order = {role: i for i, role in enumerate(kinds.role_names())}
    points = [PointPlan(Point(p["task"], p["k"], p["baseline"], p["seed"], p.get("axes") or {}),
                        dict(sorted(p["stages"].items(), key=lambda kv: order.get(kv[0], len(order)))))
              for p in rec["points"]]
    return Plan(points, stages), Store(rec["store"])


def load(sweep_dir: str | Path) -> tuple[Plan, Store, dict[str, Any]]:
    """(plan, store, composed config) of a sweep directory."""
    plan, store = load_plan(sweep_dir)
    path = Path(sweep_dir) / CONFIG
    cfg = yaml.load(path.read_text(), Loader=_Loader) if path.exists() else {}
    return plan, store, cfg


def resolve(name_or_path: str, sweeps_root: str | Path | None = None) -> Path:
    """A sweep given by path, or by name under the sweeps root (R360_ROOT/sweeps or runs/sweeps)."""
    import os

    p = Path(name_or_path)
    if (p / PLAN).exists():
        return p
    root = Path(sweeps_root) if sweeps_root else Path(os.environ.get("R360_ROOT", "runs")) / "sweeps"
    if (root / name_or_path / PLAN).exists():
        return root / name_or_path
    raise SweepDirError(f"no sweep {name_or_path!r} (looked for {p}/{PLAN} and {root / name_or_path}/{PLAN})")
