"""Grid expansion: the composed config becomes a list of points, each a plain config dict.

A point is one element of tasks x (backtracks + baselines) x seeds x axes. Points are
plain dicts (not OmegaConf nodes) so that a 1,000-point grid expands in milliseconds.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Baselines: points whose SFT data is not k-backtrack traces. `cold_start`: RL straight from
# the base model. The others SFT on a teacher's sampled answers to the SFT problems, split by
# grade (a distill stage, configs/distill/): name -> (teacher in distill.teachers, split).
DISTILL_BASELINES = {
    "short_cot_correct": ("short_cot", "correct"),
    "short_cot_incorrect": ("short_cot", "incorrect"),
    "long_cot_correct": ("long_cot", "correct"),
    "long_cot_incorrect": ("long_cot", "incorrect"),
    "long_cot_wrong_format": ("long_cot", "incorrect_format"),
}
BASELINES = ("cold_start", *DISTILL_BASELINES)
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


_task_cache: dict[str, dict] = {}


def task_config(name: str) -> dict[str, Any]:
    """configs/task/<name>.yaml as a dict (cached: read once per process)."""
    if name not in _task_cache:
        path = CONFIGS / "task" / f"{name}.yaml"
        if not isinstance(name, str) or not path.exists():
            known = sorted(p.stem for p in (CONFIGS / "task").glob("*.yaml"))
            raise GridError(f"grid.tasks: unknown task {name!r} (known: {', '.join(known)})")
        _task_cache[name] = yaml.safe_load(path.read_text())
    return _task_cache[name]


def expand(cfg: dict[str, Any]) -> list[Point]:
    """All points of cfg['grid'], each with its own resolved config."""
    grid = cfg["grid"]
    from_task = grid.get("backtracks") == FROM_TASK
    for key in ("tasks", "backtracks", "baselines", "rl_only_baselines", "seeds"):
        if key == "backtracks" and from_task:
            continue
        if not isinstance(grid.get(key) or [], list):
            raise GridError(f"grid.{key}: expected a list, got {grid.get(key)!r}")
    if not grid.get("tasks"):
        raise GridError("grid.tasks: empty; name at least one task")
    _check_ks("grid.backtracks", [] if from_task else grid.get("backtracks") or [])
    rl_only = grid.get("rl_only_baselines")      # None: RL-only tasks get grid.baselines
    for b in (grid.get("baselines") or []) + (rl_only or []):
        if b not in BASELINES:
            raise GridError(f"grid.baselines: unknown baseline {b!r} (known: {', '.join(BASELINES)})")
    for b in rl_only or []:
        if b in DISTILL_BASELINES:
            raise GridError(f"grid.rl_only_baselines: {b!r} needs SFT problems, which RL-only tasks do not "
                            "have; they take cold_start")
    if any(b in DISTILL_BASELINES for b in grid.get("baselines") or []):
        check_distill(cfg)
    for s in grid.get("seeds") or []:
        if isinstance(s, bool) or not isinstance(s, int):
            raise GridError(f"grid.seeds: seeds must be integers, got {s!r}")
    axes = grid.get("axes") or {}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"grid.axes.{key}: expected a non-empty list of values")
        _check_path(cfg, key)
    axis_items = [[(key, v) for v in values] for key, values in axes.items()]

    points = []
    for task in grid["tasks"]:
        tcfg = task_config(task)
        variants: list[tuple[int | None, str | None]] = []
        if tcfg.get("backtrack_sft", True):
            ks = task_k_values(tcfg, cfg.get("scale_name"), task) if from_task else grid.get("backtracks") or []
            variants += [(k, None) for k in ks]
            variants += [(None, b) for b in grid.get("baselines") or []]
        else:
            names = (grid.get("baselines") if rl_only is None else rl_only) or []
            variants += [(None, b) for b in names if b not in DISTILL_BASELINES]
        for (k, baseline), seed, combo in itertools.product(
                variants, grid.get("seeds") or [cfg.get("seed", 0)], itertools.product(*axis_items)):
            pcfg = copy.deepcopy(cfg)
            pcfg["task"] = copy.deepcopy(tcfg)
            pcfg["seed"] = seed
            for key, v in combo:
                _set(pcfg, key, v)
            points.append(Point(task, k, baseline, seed, dict(combo), pcfg))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise GridError(f"grid: two points share the name {dup!r} (duplicate values in the grid?)")
    return points


def _check_ks(where: str, ks: Any) -> None:
    if not isinstance(ks, list):
        raise GridError(f"{where}: expected a list of k values, got {ks!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise GridError(f"{where}: k must be a non-negative integer, got {k!r}")


def task_k_values(tcfg: dict, scale: str | None, task: str) -> list[int]:
    """A task's own k grid at `scale` (`k_values`: a list, or a mapping scale -> list)."""
    ks = tcfg.get("k_values") or []
    if isinstance(ks, dict):
        if scale not in ks:
            raise GridError(f"task {task}: k_values has no entry for scale {scale!r} (has: {', '.join(ks)})")
        ks = ks[scale]
    _check_ks(f"task {task}: k_values", ks)
    return list(ks)


def _check_path(cfg: dict, dotted: str) -> None:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise GridError(f"grid.axes: {dotted!r} is not a key of the config")
        node = node[part]


def _set(cfg: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def teacher_of(cfg: dict[str, Any], baseline: str) -> dict[str, Any]:
    """The teacher and split of a distill baseline: {"source", "split", "sft_k", "path",
    "max_new_tokens"} from distill.teachers.<source>."""
    source, split = DISTILL_BASELINES[baseline]
    t = dict(((cfg.get("distill") or {}).get("teachers") or {}).get(source) or {})
    return {"source": source, "split": split, "sft_k": t.get("sft_k"), "path": t.get("path"),
            "max_new_tokens": t.get("max_new_tokens")}


def check_distill(cfg: dict[str, Any]) -> None:
    """The distill config, checked in one line per bad key before anything runs."""
    d = cfg.get("distill")
    if not isinstance(d, dict):
        raise GridError("distill: missing config group (configs/distill/default.yaml)")
    if d.get("backend") not in ("builtin", "vllm"):
        raise GridError(f"distill.backend: expected builtin or vllm, got {d.get('backend')!r}")
    for key in ("n", "batch_size", "concurrency"):
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GridError(f"distill.{key}: expected a positive integer, got {v!r}")
    used = {DISTILL_BASELINES[b][0] for b in cfg["grid"].get("baselines") or [] if b in DISTILL_BASELINES}
    for source in sorted(used):
        t = ((d.get("teachers") or {}).get(source))
        where = f"distill.teachers.{source}"
        if not isinstance(t, dict):
            raise GridError(f"{where}: missing (a mapping with sft_k or path)")
        mnt = t.get("max_new_tokens")
        if isinstance(mnt, bool) or not isinstance(mnt, int) or mnt < 1:
            raise GridError(f"{where}.max_new_tokens: expected a positive integer, got {mnt!r}")
        if t.get("path"):
            if not Path(str(t["path"])).expanduser().is_dir():
                raise GridError(f"{where}.path: {t['path']!r} is not a directory (give a local HF checkpoint)")
        elif t.get("sft_k") is None:
            raise GridError(f"{where}: set path (a local HF checkpoint; the paper's long-CoT teacher is "
                            "QwQ-32B) or sft_k (this sweep's own SFT model on k-backtrack traces)")
        else:
            _check_ks(f"{where}.sft_k", [t["sft_k"]])
