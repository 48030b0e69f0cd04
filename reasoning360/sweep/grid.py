"""Grid expansion: the composed config becomes a list of points, each a plain config dict.

A point is one element of grid.tasks x (backtracks + baselines) x grid.seeds x grid.axes; its
config is the composed one with `task` set to tasks.<its task> (as Hydra composed it, overrides
included), `seed` to its training seed and its axis values applied. Points are plain dicts (not
OmegaConf nodes) so that a 1,000-point grid expands in milliseconds. The config is read
strictly: the schema (reasoning360/sweep/schema.py) has already checked every key.
"""

from __future__ import annotations

import itertools
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[2] / "configs"      # the Hydra tree (configs/)

# `grid.backtracks: task` runs each task's own `k_values` (configs/task/<name>.yaml; a list, or
# a mapping scale -> list).
FROM_TASK = "task"


class GridError(ValueError):
    """A bad grid or config value, reported in one line naming the key, before any work."""


@dataclass
class Point:
    task: str
    k: int | None              # backtracks in the SFT traces; None for a baseline
    baseline: str | None
    seed: int
    axes: dict[str, Any] = field(default_factory=dict)
    cfg: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def variant(self) -> str:
        return f"k{self.k}" if self.baseline is None else self.baseline

    @property
    def name(self) -> str:
        parts = [self.task, self.variant, f"s{self.seed}"]
        parts += [f"{key.split('.')[-1]}={_short(v)}" for key, v in sorted(self.axes.items())]
        return "-".join(parts)


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def expand(cfg: dict[str, Any]) -> list[Point]:
    """All points of cfg['grid'], each with its own resolved config."""
    from ..stages.distill import DISTILL_BASELINES

    grid = cfg["grid"]
    unknown = [t for t in grid["tasks"] if t not in cfg["tasks"]]
    if unknown:
        raise GridError(f"grid.tasks: unknown task {unknown[0]!r} (known: {', '.join(cfg['tasks'])})")
    rl_only = grid["rl_only_baselines"]      # None: RL-only tasks get grid.baselines
    for b in rl_only or []:
        if b in DISTILL_BASELINES:
            raise GridError(f"grid.rl_only_baselines: {b!r} needs SFT problems, which RL-only tasks do not "
                            "have; they take cold_start")
    axes = grid["axes"] or {}
    for key in axes:
        _check_path(cfg, key)
    axis_items = [[(key, v) for v in values] for key, values in axes.items()]
    # Each point gets its own copy of the config; unpickling one pickle per point is ~4x faster
    # than copy.deepcopy and gives the same independent plain data.
    base = pickle.dumps({k: v for k, v in cfg.items() if k != "tasks"}, pickle.HIGHEST_PROTOCOL)

    points = []
    for task in grid["tasks"]:
        tcfg = cfg["tasks"][task]
        task_blob = pickle.dumps(tcfg, pickle.HIGHEST_PROTOCOL)
        if tcfg["name"] != task:
            raise GridError(f"tasks.{task}.name: {tcfg['name']!r} (it must be the key it is composed under)")
        variants: list[tuple[int | None, str | None]] = []
        if tcfg["backtrack_sft"]:
            ks = task_k_values(tcfg, cfg["scale_name"], task) if grid["backtracks"] == FROM_TASK else grid["backtracks"]
            variants += [(k, None) for k in ks]
            variants += [(None, b) for b in grid["baselines"]]
        else:
            names = grid["baselines"] if rl_only is None else rl_only
            variants += [(None, b) for b in names if b not in DISTILL_BASELINES]
        for (k, baseline), seed, combo in itertools.product(variants, grid["seeds"],
                                                            itertools.product(*axis_items)):
            pcfg = pickle.loads(base)
            pcfg["task"] = pickle.loads(task_blob)
            pcfg["seed"] = seed
            for key, v in combo:
                _set(pcfg, key, v, task)
            points.append(Point(task, k, baseline, seed, dict(combo), pcfg))
    if not points:
        raise GridError("grid: no points (grid.tasks x grid.backtracks/grid.baselines x grid.seeds is empty "
                        "for these tasks); name at least one k or baseline")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise GridError(f"grid: two points share the name {dup!r} (duplicate values in the grid?)")
    return points


def task_k_values(tcfg: dict, scale: str, task: str) -> list[int]:
    """A task's own k grid at `scale` (`k_values`: a list, or a mapping scale -> list)."""
    ks = tcfg["k_values"]
    if isinstance(ks, dict):
        if scale not in ks:
            raise GridError(f"tasks.{task}.k_values: no entry for scale {scale!r} (has: {', '.join(ks)})")
        ks = ks[scale]
    return list(ks)


def _check_path(cfg: dict, dotted: str) -> None:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise GridError(f"grid.axes: {dotted!r} is not a key of the config")
        node = node[part]
    if isinstance(node, dict):
        raise GridError(f"grid.axes: {dotted!r} is a section, not a value; sweep one of its keys")


def _set(cfg: dict, dotted: str, value: Any, task: str) -> None:
    """Set an axis value in a point's config; `tasks.<name>.*` reaches the point's `task` when
    it is that task (and nothing otherwise)."""
    if dotted.startswith("tasks."):
        _, name, rest = dotted.split(".", 2)
        if name != task:
            return
        dotted = "task." + rest
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value
