"""Load a sweep directory into tidy pandas DataFrames.

    sweep = load_sweep("runs/sweeps/backtrack")     # a path, or a name under R360_ROOT/sweeps
    sweep.points    one row per grid point: task, k, baseline, variant, seed, axes, the point's
                    config flattened (model.*, sft.*, rl.*, eval.*, engine.*), state
    sweep.stages    one row per (point, role) stage: the point's columns + role, kind, stage_id,
                    state (done / running / failed / interrupted / not started: StageDir.state), last_step, wall_s, error
    sweep.evals     one row per (point, eval role): accuracy, format_rate, n, ... from summary.json
    sweep.steps     one row per logged step of the sft and rl stages (loaded on first access)
    sweep.items     one row per eval item, decoding protocol and sample: index, protocol
                    ("sample" or "greedy"), sample, correct, format_ok, response_tokens,
                    backtracks, difficulty columns (loaded on first access; text columns with
                    text=True). Items written before protocols existed read as greedy, sample 0.
    sweep.missing   one line per point that is not finished, saying what is missing and why

A partial sweep (stages running, failed, never started) loads without error: what is not
there is NaN (missing), never 0. Reads only files: no Slurm query, no launcher import.
Metrics come from `metrics.parquet` (written when a stage finishes), or from
`metrics.jsonl` for a stage still running.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from reasoning360.sweep import sweepdir
from reasoning360.sweep.store import STATES, StageDir, StageState, point_state
from reasoning360.tracking import last_step
TRAIN_ROLES = ("sft", "rl")
EVAL_ROLES = ("sft_eval", "rl_eval")
# Columns of items.parquet that hold model or problem text (untrusted, large): loaded only on request.
TEXT_COLUMNS = ("question", "prompt", "response", "answer", "ground_truth")
# Columns every table keys on, in order.
POINT_KEYS = ["sweep", "point", "task", "variant", "k", "baseline", "seed"]
# Config sections flattened into point columns (from sweep.yaml, with the point's axes applied).
CONFIG_SECTIONS = ("model", "engine", "data", "sft", "rl", "eval", "rollout")
EVAL_SUMMARY_KEYS = ("accuracy", "format_rate", "mean_response_tokens", "mean_backtracks", "n")
# What items.parquet files without protocol / sample columns hold (evals from before protocols).
OLD_PROTOCOL, OLD_SAMPLE = "greedy", 0


@dataclass
class Sweep:
    dir: Path
    name: str
    cfg: dict[str, Any]
    store: Path
    axes: list[str]
    points: pd.DataFrame
    stages: pd.DataFrame
    evals: pd.DataFrame
    missing: list[str]
    _steps: pd.DataFrame | None = field(default=None, repr=False)
    _items: pd.DataFrame | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ lazy tables
    @property
    def steps(self) -> pd.DataFrame:
        if self._steps is None:
            self._steps = load_steps(self)
        return self._steps

    @property
    def items(self) -> pd.DataFrame:
        if self._items is None:
            self._items = load_items(self)
        return self._items

    @property
    def keys(self) -> list[str]:
        """The columns that identify a point: POINT_KEYS + the sweep's axes."""
        return POINT_KEYS + self.axes

    def stage_dir(self, point: str, role: str) -> Path | None:
        row = self.stages[(self.stages.point == point) & (self.stages.role == role)]
        return None if row.empty else self.store / row.stage_id.iloc[0]

    def samples(self, point: str, role: str = "rl_eval", n_correct: int = 2, n_incorrect: int = 2,
                seed: int = 0, protocol: str | None = None) -> pd.DataFrame:
        """A few eval items of one point with their text (question, response), correct ones
        first; chosen by a seeded draw, preferring responses that contain backtracks. With
        `protocol`, only that protocol's first sample."""
        sd = self.stage_dir(point, role)
        path = sd / "items.parquet" if sd is not None else None
        if path is None or not path.exists():
            return pd.DataFrame()
        df = _with_protocol(_read_items_file(path, text=True))
        if protocol is not None:
            df = df[(df["protocol"] == protocol) & (df["sample"] == 0)]
        rng = np.random.default_rng(seed)
        picked = []
        for want, n in ((True, n_correct), (False, n_incorrect)):
            sub = df[df["correct"].astype(bool) == want] if "correct" in df else df.iloc[0:0]
            if sub.empty or n <= 0:
                continue
            order = rng.permutation(len(sub))
            sub = sub.iloc[order]
            if "backtracks" in sub:   # stable: those with backtracks first, then the rest
                sub = sub.iloc[np.argsort(~(sub["backtracks"].fillna(0).to_numpy() > 0), kind="stable")]
            picked.append(sub.head(n))
        return pd.concat(picked, ignore_index=True) if picked else pd.DataFrame()

    def describe(self) -> str:
        """One line of counts and the missing points, for terminals and notebooks."""
        counts = self.points["state"].value_counts()
        parts = [f"{int(counts.get(s, 0))} {s}" for s in STATES if counts.get(s, 0)]
        head = f"sweep {self.name}: {len(self.points)} points ({', '.join(parts) or 'none'})"
        return head + ("".join(f"\n  missing: {m}" for m in self.missing))

    def __repr__(self) -> str:
        return f"<Sweep {self.describe()}>"


# ---------------------------------------------------------------------------- loading

def load_sweep(sweep: str | os.PathLike, *, sweeps_root: str | os.PathLike | None = None) -> Sweep:
    """Read a sweep directory (plan.json, sweep.yaml) and its stages' states and summaries.
    `steps` and `items` load on first access."""
    sweep_dir = sweepdir.resolve(str(sweep), sweeps_root)
    rec = json.loads((sweep_dir / sweepdir.PLAN).read_text())
    cfg_path = sweep_dir / sweepdir.CONFIG
    cfg = _load_yaml(cfg_path) if cfg_path.exists() else {}
    store = Path(rec["store"])
    if not store.is_absolute():
        store = (sweep_dir / store).resolve()
    if not store.exists() and (sweep_dir.parent.parent / "store").is_dir():
        store = sweep_dir.parent.parent / "store"     # ROOT/sweeps/NAME + ROOT/store, copied elsewhere
    name = (cfg.get("sweep") or {}).get("name") or sweep_dir.name
    axes = sorted({k for p in rec["points"] for k in (p.get("axes") or {})})
    base_cfg = _flatten({s: cfg[s] for s in CONFIG_SECTIONS if isinstance(cfg.get(s), dict)})

    point_rows, stage_rows, eval_rows, missing = [], [], [], []
    state_cache: dict[str, dict[str, Any]] = {}
    for p in rec["points"]:
        row = _point_row(name, p, axes, base_cfg)
        states = {}
        for role, sid in (p.get("stages") or {}).items():
            st = state_cache.get(sid)
            if st is None:
                st = state_cache[sid] = _stage_state(store / sid)
            states[role] = st
            stage_rows.append({**row, "role": role, "kind": rec["stages"].get(sid, {}).get("kind", role),
                               "stage_id": sid, "state": st["state"], "detail": st["detail"],
                               "last_step": st["last_step"],
                               "wall_s": st["wall_s"], "error": st["error"]})
            if role in EVAL_ROLES:
                summ = st["summary"] if st["state"] == "done" else {}
                eval_rows.append({**row, "role": role, "stage_id": sid, "state": st["state"],
                                  **{k: _num(summ.get(k)) for k in EVAL_SUMMARY_KEYS}})
        pstate, why = _point_state(states)
        row.update(state=pstate, wall_s=sum(s["wall_s"] for s in states.values()
                                              if not math.isnan(s["wall_s"])))
        point_rows.append(row)
        if why:
            missing.append(f"{row['point']}: {why}")

    points = _frame(point_rows, POINT_KEYS + axes)
    stages = _frame(stage_rows, POINT_KEYS + axes)
    evals = _frame(eval_rows, POINT_KEYS + axes)
    for df in (points, stages, evals):
        if "state" in df:
            df["state"] = pd.Categorical(df["state"], categories=list(STATES))
    return Sweep(sweep_dir, name, cfg, store, axes, points, stages, evals, missing)


def _load_yaml(path: Path) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader) or {}


def _point_row(sweep_name: str, p: dict, axes: list[str], base_cfg: dict) -> dict:
    k, baseline = p.get("k"), p.get("baseline")
    variant = f"k{k}" if not baseline else baseline
    name = p.get("name") or f"{p['task']}-{variant}-s{p.get('seed')}"
    row: dict[str, Any] = {"sweep": sweep_name, "point": name, "task": p["task"], "variant": variant,
                           "k": k, "baseline": baseline or "", "seed": p.get("seed")}
    pax = p.get("axes") or {}
    for a in axes:
        row[a] = pax.get(a)
    cfg = dict(base_cfg)
    for key, v in pax.items():
        cfg.pop(key, None)
    for key, v in cfg.items():
        if key not in row:
            row[key] = v
    return row


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def _num(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def _frame(rows: list[dict], keys: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=keys)
    df["k"] = df["k"].astype("Int64")
    df["seed"] = df["seed"].astype("Int64")
    return df


def _stage_state(path: Path) -> dict[str, Any]:
    """The stage's state (StageDir.state: the one definition `r360 status` and the results table
    use), with its last logged step, wall seconds and error."""
    sd = StageDir(path)
    st = sd.state()
    out: dict[str, Any] = {"state": st.state, "detail": st.detail, "last_step": math.nan, "wall_s": math.nan,
                           "error": st.detail if st.state == "failed" else "", "summary": {}}
    if st.state == "done":
        out["summary"] = sd.summary()
        out["wall_s"] = _num(out["summary"].get("wall_s"))
        return out
    attempts = sd.attempts()
    if attempts:
        out["wall_s"] = sum(_num(a.get("seconds", 0.0)) for a in attempts)
    step = last_step(path)
    out["last_step"] = math.nan if step is None else float(step)
    return out


def _point_state(states: dict[str, dict]) -> tuple[str, str]:
    """A point's state (reasoning360.sweep.store.point_state: the one rule the results table and
    `r360 status` use) and, when it is not done, what is missing and why."""
    if not states:
        return "not started", "no stages planned"
    st, role = point_state({r: StageState(s["state"], s["detail"]) for r, s in states.items()})
    if role is None:
        return "done", ""
    not_done = [r for r, s in states.items() if s["state"] != "done"]
    evals = [r for r in EVAL_ROLES if r in not_done] or not_done[-1:]
    what = "no " + " / ".join(evals)
    if st.state == "failed":
        err = states[role]["error"]
        return "failed", f"{what}: {role} failed" + (f" ({err[:200]})" if err else "")
    step = states[role]["last_step"]
    at = f" at step {int(step)}" if not math.isnan(step) else ""
    why = f" ({st.detail})" if st.detail else ""
    return st.state, f"{what}: {role} {st.state}{why}{at}"


# ---------------------------------------------------------------------------- steps

def load_steps(sweep: Sweep, roles: Iterable[str] = TRAIN_ROLES) -> pd.DataFrame:
    """One row per logged step of the sweep's training stages, with the point's key columns,
    `role` and `stage_id`. A stage shared by several points appears once per point."""
    st = sweep.stages
    if not st.empty:
        st = st[st["role"].isin(list(roles))]
    df = _stack(sweep, st, lambda sid: _read_metrics(sweep.store / sid))
    if df is None:
        return pd.DataFrame(columns=sweep.keys + ["role", "stage_id", "step"])
    if "step" in df:
        df["step"] = df["step"].astype("int64", errors="ignore")
    return df


def _stack(sweep: Sweep, stages: pd.DataFrame, read) -> pd.DataFrame | None:
    """Read each distinct stage of `stages` once (`read(stage_id)` -> arrow table or None),
    stack them, and prepend the point's key columns (categoricals), one copy per point."""
    import pyarrow as pa

    if stages.empty:
        return None
    pairs = stages[sweep.keys + ["role", "stage_id"]].reset_index(drop=True)
    tables, lengths = [], {}
    for sid in dict.fromkeys(pairs["stage_id"]):
        t = read(sid)
        if t is not None and t.num_rows:
            tables.append(t)
            lengths[sid] = t.num_rows
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive")
    offsets, o = {}, 0
    for sid, n in lengths.items():
        offsets[sid] = o
        o += n
    pairs = pairs[pairs["stage_id"].isin(lengths)].reset_index(drop=True)
    counts = pairs["stage_id"].map(lengths).to_numpy(dtype=np.int64)
    starts = pairs["stage_id"].map(offsets).to_numpy(dtype=np.int64)
    if not np.array_equal(starts, np.concatenate([[0], np.cumsum(counts)[:-1]])):   # shared stages
        idx = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
        table = table.take(pa.array(idx))
    df = table.to_pandas(split_blocks=True)
    codes = np.repeat(np.arange(len(pairs)), counts)
    for i, col in enumerate(sweep.keys + ["role", "stage_id"]):
        vals = pairs[col]
        if col in ("k", "seed"):
            arr = pd.array(vals.to_numpy()[codes], dtype="Int64")
        elif pd.api.types.is_numeric_dtype(vals.dtype) and not pd.api.types.is_bool_dtype(vals.dtype):
            arr = vals.to_numpy()[codes]
        else:
            cat = pd.Categorical(vals)
            arr = pd.Categorical.from_codes(cat.codes[codes], categories=cat.categories)
        df.insert(i, col, arr)       # no copy of the metric columns
    return df


def _read_metrics(path: Path):
    """A stage's metrics as an arrow table: metrics.parquet if the stage finished writing it,
    else the rows of metrics.jsonl so far (a torn last line is skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = path / "metrics.parquet"
    if pq_path.exists():
        try:
            return pq.ParquetFile(pq_path).read(use_threads=False, use_pandas_metadata=False)
        except (OSError, pa.ArrowException):
            pass
    from reasoning360.tracking import read_metrics

    rows = read_metrics(path)
    if not rows:
        return None
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError):
        return pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)


# ---------------------------------------------------------------------------- items

def load_items(sweep: Sweep, *, text: bool = False, roles: Iterable[str] = EVAL_ROLES) -> pd.DataFrame:
    """One row per eval item of every finished eval stage, with the point's key columns,
    `role` and `stage_id`. Difficulty metadata become `difficulty*` columns."""
    ev = sweep.stages
    if not ev.empty:
        ev = ev[ev["role"].isin(list(roles)) & (ev["state"] == "done")]

    def read(sid: str):
        path = sweep.store / sid / "items.parquet"
        return _read_items_table(path, text=text) if path.exists() else None

    df = _stack(sweep, ev, read)
    if df is None:
        return pd.DataFrame(columns=sweep.keys + ["role", "stage_id", "index", "protocol", "sample", "correct"])
    for c in ("correct", "format_ok"):
        if c in df:
            df[c] = df[c].fillna(False).astype(bool)
    return _expand_difficulty(_with_protocol(df))


def _with_protocol(df: pd.DataFrame) -> pd.DataFrame:
    """Every item row gets `protocol` and `sample`; rows written without them (old evals)
    read as OLD_PROTOCOL, OLD_SAMPLE."""
    if "protocol" in df:
        df["protocol"] = pd.Categorical(df["protocol"].astype(object).where(df["protocol"].notna(), OLD_PROTOCOL))
    else:
        df["protocol"] = pd.Categorical([OLD_PROTOCOL] * len(df))
    if "sample" in df:
        df["sample"] = df["sample"].fillna(OLD_SAMPLE).astype("int64")
    else:
        df["sample"] = np.full(len(df), OLD_SAMPLE, dtype="int64")
    return df


def _read_items_table(path: Path, *, text: bool):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        cols = names if text else [c for c in names if c not in TEXT_COLUMNS]
        return pf.read(columns=cols, use_threads=False, use_pandas_metadata=False)
    except (OSError, pa.ArrowException):
        return None


def _read_items_file(path: Path, *, text: bool) -> pd.DataFrame:
    t = _read_items_table(path, text=text)
    return pd.DataFrame() if t is None else _expand_difficulty(t.to_pandas())


def _expand_difficulty(df: pd.DataFrame) -> pd.DataFrame:
    """Struct or JSON-dict `difficulty` (or the `difficulty` of a `metadata` dict) become flat
    `difficulty.<key>` columns; a scalar `difficulty` column stays as it is. Each distinct
    value is parsed once."""
    for col in [c for c in ("difficulty", "metadata") if c in df.columns]:
        s = df[col]
        keys = s.map(lambda v: json.dumps(v, sort_keys=True, default=str) if isinstance(v, dict) else v)
        parsed: dict[Any, Any] = {}
        for u in pd.unique(keys.dropna()):
            d = _json_dict(u) if isinstance(u, str) else u
            if col == "metadata":
                d = d.get("difficulty") if isinstance(d, dict) else None
            elif d is None:
                d = u                       # a scalar level (or a non-JSON string)
            parsed[u] = d
        dicts = {u: _flatten(d) for u, d in parsed.items() if isinstance(d, dict)}
        if col == "metadata":
            df = df.drop(columns=[col])
            scal = {u: d for u, d in parsed.items() if d is not None and not isinstance(d, dict)}
            if scal and "difficulty" not in df:
                df["difficulty"] = keys.map(scal)
        elif dicts:
            df = df.drop(columns=[col])
        else:
            continue
        names = sorted({k for d in dicts.values() for k in d})
        for name in names:
            out = f"difficulty.{name}"
            if out not in df:
                df[out] = keys.map({u: d.get(name) for u, d in dicts.items()})
    return df


def _json_dict(v: Any) -> dict | None:
    if not isinstance(v, str):
        return None
    try:
        d = json.loads(v)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def difficulty_columns(items: pd.DataFrame, max_levels: int = 20) -> list[str]:
    """Columns of `items` that hold a difficulty level with 2..max_levels distinct values
    (named `difficulty`, `difficulty.<key>` or `level`)."""
    out = []
    for c in items.columns:
        if c == "difficulty" or c.startswith("difficulty.") or c == "level":
            n = items[c].dropna().astype(str).nunique()
            if 2 <= n <= max_levels:
                out.append(c)
    return out
