"""Before any launcher runs: resolve the composed config, validate it, plan the stages, and
record the sweep (`python sweep.py` = this, then reasoning360.launchers hands it to a launcher).

Everything that can be wrong with the input is found here, before a single stage directory
is written or a job submitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from .plan import Plan, plan as make_plan
from .grid import DISTILL_BASELINES, GridError, Point, expand, teacher_of
from .store import Store
from . import sweepdir

ENGINES = ("local", "verl_fsdp", "verl_megatron")
LAUNCHERS = ("local", "slurm")
ROLLOUT_BACKENDS = ("builtin", "vllm")


def resolve(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue as e:
        key = e.full_key
        hint = ""
        if key == "model.path":
            hint = (f" (scale={cfg.get('scale_name')} uses a real checkpoint: pass "
                    "model.path=/path/to/Qwen2.5-3B-Instruct, a local directory; nothing is downloaded)")
        raise GridError(f"{key}: missing value{hint}") from None


def validate(cfg: dict[str, Any]) -> None:
    eng = cfg["engine"]["name"]
    if eng not in ENGINES:
        raise GridError(f"engine.name: unknown engine {eng!r} (known: {', '.join(ENGINES)})")
    if cfg["launcher"]["name"] not in LAUNCHERS:
        raise GridError(f"launcher.name: unknown launcher {cfg['launcher']['name']!r} (known: {', '.join(LAUNCHERS)})")
    workers = cfg["launcher"].get("workers", 1)
    if cfg["launcher"]["name"] == "local" and workers != "auto" and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise GridError(f"launcher.workers: expected auto or a positive integer, got {workers!r}")
    if cfg["rollout"]["backend"] not in ROLLOUT_BACKENDS:
        raise GridError(f"rollout.backend: unknown backend {cfg['rollout']['backend']!r} "
                        f"(known: {', '.join(ROLLOUT_BACKENDS)})")
    path = cfg["model"].get("path")
    if path is not None and not Path(path).is_dir():
        raise GridError(f"model.path: {path!r} is not a directory (give a local HF checkpoint)")
    if path is None and cfg["model"].get("arch") == "from_path":
        raise GridError("model.path: this model config loads from a path; set model.path")
    for key in ("sft_size", "train_size", "val_size", "test_size"):
        v = cfg["data"][key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GridError(f"data.{key}: expected a positive integer, got {v!r}")
    if (cfg["launcher"]["name"] == "local" and cfg["engine"].get("device") == "cuda"
            and not _cuda_available()):
        raise GridError(f"engine.device: cuda requested (scale={cfg.get('scale_name')}) but this machine has "
                        "no GPU; run it on a cluster with launcher=slurm cluster=<site>, or use scale=cpu")


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def validate_points(points: list[Point]) -> None:
    from ..tasks import TaskError, validate_point

    seen: set = set()
    for p in points:
        # A distill baseline's teacher trained on k-backtrack traces needs that k to exist too.
        teacher_k = teacher_of(p.cfg, p.baseline)["sft_k"] if p.baseline in DISTILL_BASELINES else None
        for k in {p.k, teacher_k}:
            key = (p.task, k, repr(p.cfg["task"]["params"].get(p.cfg["scale_name"])))
            if key in seen:
                continue
            seen.add(key)
            try:
                validate_point(p.task, k, p.cfg["task"]["params"][p.cfg["scale_name"]])
            except TaskError as e:
                where = f"distill.teachers.{teacher_of(p.cfg, p.baseline)['source']}.sft_k" \
                    if k is not None and k == teacher_k and k != p.k else "grid"
                raise GridError(f"{where} ({p.name}): {e}") from None


def build(cfg: DictConfig) -> tuple[dict[str, Any], Plan, Store, Path]:
    """Resolve, validate and plan: no side effect on disk."""
    c = resolve(cfg)
    validate(c)
    points = expand(c)
    validate_points(points)
    plan = make_plan(points, c["sweep"]["name"])
    return c, plan, Store(c["paths"]["store"]), Path(c["paths"]["sweeps"]) / c["sweep"]["name"]


def record(c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path) -> None:
    """Write the sweep directory and every stage's spec.json (DONE stages keep theirs)."""
    sweepdir.save(sweep_dir, plan, store, c, overwrite=c["sweep"]["overwrite"])
    store.record_all({s.id: (s.spec, s.runtime) for s in plan.stages.values()})
