"""Before any launcher runs: resolve the composed config, validate it, plan the stages, and
record the sweep (`python sweep.py` = this, then reasoning360.launchers hands it to a launcher).

Everything that can be wrong with the input is found here, in one line naming the key, before a
single stage directory is written or a job submitted: the schema (types, ranges, choices, no
unknown or missing key), then the rules that tie keys together or look at the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from . import schema, sweepdir
from .grid import GridError, Point, expand
from .plan import Plan, plan as make_plan
from .schema import ConfigError
from .store import Store

PSEUDO_FS = ("/proc", "/sys", "/dev")


def resolve(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue as e:
        key = e.full_key
        hint = ""
        if key == "model.path":
            hint = (f" (scale={cfg.get('scale_name')} uses a real checkpoint: pass "
                    "model.path=/path/to/Qwen2.5-3B-Instruct, a local directory; nothing is downloaded)")
        raise ConfigError(f"{key}: missing value{hint}") from None


def validate(c: dict[str, Any]) -> None:
    """The schema, then what ties keys together or looks at the machine."""
    schema.check(c)
    _check_model(c["model"], "model")
    rl = c["rl"]
    if rl["mini_batch_size"] > rl["batch_size"]:
        raise ConfigError(f"rl.mini_batch_size: {rl['mini_batch_size']} is larger than rl.batch_size "
                          f"({rl['batch_size']})")
    if rl["batch_size"] % rl["mini_batch_size"]:
        raise ConfigError(f"rl.mini_batch_size: {rl['mini_batch_size']} does not divide rl.batch_size "
                          f"({rl['batch_size']})")
    d = c["data"]
    if d["trace_style"] == "compact" and d["template"] != "compact":
        raise ConfigError(f"data.trace_style: compact traces answer in the compact format, which only "
                          f"data.template=compact asks for (got template={d['template']!r}); use trace_style=paper")
    sft = c["sft"]
    if sft["micro_batch_size"] is not None and sft["micro_batch_size"] > sft["batch_size"]:
        raise ConfigError(f"sft.micro_batch_size: {sft['micro_batch_size']} is larger than sft.batch_size "
                          f"({sft['batch_size']})")
    for key, steps, total in (("sft.export_steps", sft["export_steps"], sft["max_steps"]),
                              ("rl.eval_steps", rl["eval_steps"], rl["steps"])):
        late = [s for s in steps if s >= total]
        if late:
            raise ConfigError(f"{key}: step {late[0]} is not before the last step ({total}; the final model "
                              "is always kept)")
    if rl["init_step"] is not None and rl["init_step"] not in sft["export_steps"]:
        raise ConfigError(f"rl.init_step: {rl['init_step']} is not in sft.export_steps {sft['export_steps']} "
                          "(the SFT stage keeps only the models it is asked to)")
    if c["eval"]["primary"] not in c["eval"]["protocols"]:
        raise ConfigError(f"eval.primary: {c['eval']['primary']!r} is not one of eval.protocols "
                          f"({', '.join(c['eval']['protocols'])})")
    if c["pretrain"]["train"]["max_steps"] and c["model"]["path"] is not None:
        raise ConfigError("pretrain.train.max_steps: the base model is model.path here; pretraining is for "
                          "models built from scratch (set it to 0)")
    for name, t in c["tasks"].items():
        if c["scale_name"] not in t["params"]:
            raise ConfigError(f"tasks.{name}.params: no entry for scale {c['scale_name']!r} "
                              f"(has: {', '.join(t['params'])})")
    _check_root(c["paths"])
    _check_distill(c)


def _check_model(m: dict[str, Any], where: str) -> None:
    if m["path"] is None:
        if m["arch"] == "from_path":
            raise ConfigError(f"{where}.path: this model config loads from a path; set {where}.path")
        if m["tokenizer"] == "path":
            raise ConfigError(f"{where}.tokenizer: 'path' needs {where}.path (a checkpoint with its tokenizer)")
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if m[key] is None:
                raise ConfigError(f"{where}.{key}: a model built from scratch needs it (or set {where}.path)")
        kv = m["num_kv_heads"] or m["num_heads"]
        if m["hidden_size"] % m["num_heads"] or m["num_heads"] % kv:
            raise ConfigError(f"{where}.num_heads: {m['num_heads']} must divide hidden_size ({m['hidden_size']}) "
                              f"and be a multiple of num_kv_heads ({kv})")
        return
    check_checkpoint_dir(m["path"], f"{where}.path", tokenizer=m["tokenizer"] == "path")


def check_checkpoint_dir(path: str, key: str, tokenizer: bool = True) -> None:
    """A local Hugging Face checkpoint: a directory with config.json (and its tokenizer)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{key}: {path!r} is not a directory (give a local HF checkpoint; nothing is downloaded)")
    if not (p / "config.json").is_file():
        raise ConfigError(f"{key}: {path!r} has no config.json (not a Hugging Face checkpoint directory)")
    if tokenizer and not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                          "tokenizer.model", "vocab.json")):
        raise ConfigError(f"{key}: {path!r} has no tokenizer (tokenizer.json / tokenizer_config.json)")


def _check_root(paths: dict[str, Any]) -> None:
    """The store and sweeps roots: creatable and writable here, on a real filesystem."""
    for key in ("store", "sweeps"):
        p = Path(paths[key]).expanduser().absolute()
        where = f"paths.{key}" if paths[key] != f"{paths['root']}/{key}" else "paths.root"
        resolved = str(p.resolve())
        if any(resolved == fs or resolved.startswith(fs + "/") for fs in PSEUDO_FS):
            raise ConfigError(f"{where}: {p} is on a pseudo filesystem ({resolved.split('/')[1]}); "
                              "choose a directory on a real disk (or set R360_ROOT)")
        existing = p
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{where}: {existing} is a file, not a directory")
        ro = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        if ro or not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{where}: {existing} is not writable here "
                              f"({'read-only filesystem' if ro else 'permission denied'}); set R360_ROOT or paths.root")


def _check_distill(c: dict[str, Any]) -> None:
    """The teachers the grid's distill baselines need: a checkpoint path, or this sweep's own
    k-backtrack SFT model (sft_k)."""
    from ..stages.distill import DISTILL_BASELINES

    used = {DISTILL_BASELINES[b][0] for b in c["grid"]["baselines"] if b in DISTILL_BASELINES}
    for source in sorted(used):
        t = c["distill"]["teachers"].get(source)
        where = f"distill.teachers.{source}"
        if t is None:
            raise ConfigError(f"{where}: missing (a mapping with sft_k or path)")
        if t["path"]:
            check_checkpoint_dir(t["path"], f"{where}.path")
        elif t["sft_k"] is None:
            raise ConfigError(f"{where}: set path (a local HF checkpoint; the paper's long-CoT teacher is "
                              "QwQ-32B) or sft_k (this sweep's own SFT model on k-backtrack traces)")


def validate_points(points: list[Point]) -> None:
    from ..stages.distill import DISTILL_BASELINES, teacher_of
    from ..tasks import TaskError, validate_point

    seen: set = set()
    for p in points:
        scale = p.cfg["scale_name"]
        params = p.cfg["task"]["params"][scale]
        # A distill baseline's teacher trained on k-backtrack traces needs that k to exist too.
        teacher_k = teacher_of(p.cfg, p.baseline)["sft_k"] if p.baseline in DISTILL_BASELINES else None
        for k in {p.k, teacher_k}:
            key = (p.task, k, repr(params))
            if key in seen:
                continue
            seen.add(key)
            try:
                validate_point(p.task, k, params)
            except TaskError as e:
                if k is not None and k == teacher_k and k != p.k:
                    where = f"distill.teachers.{teacher_of(p.cfg, p.baseline)['source']}.sft_k"
                elif k is None:
                    where = f"tasks.{p.task}.params.{scale}"
                else:
                    where = "grid.backtracks"
                raise ConfigError(f"{where} ({p.name}): {e}") from None


def build(cfg: DictConfig) -> tuple[dict[str, Any], Plan, Store, Path]:
    """Resolve, validate and plan: no side effect on disk."""
    c = resolve(cfg)
    validate(c)
    points = expand(c)
    validate_points(points)
    plan = make_plan(points, c["sweep"]["name"])
    return c, plan, Store(c["paths"]["store"]), Path(c["paths"]["sweeps"]).absolute() / c["sweep"]["name"]


def record(c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path) -> None:
    """Write the sweep directory and every stage's spec.json (DONE stages keep theirs)."""
    sweepdir.save(sweep_dir, plan, store, c, overwrite=c["sweep"]["overwrite"])
    store.record_all({s.id: (s.spec, s.runtime) for s in plan.stages.values()})


__all__ = ["GridError", "ConfigError", "build", "record", "resolve", "validate", "validate_points"]
