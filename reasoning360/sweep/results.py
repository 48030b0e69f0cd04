"""The sweep's results table: one row per point, read from the eval stages' summaries.

A point whose eval has not finished shows NaN (missing), never 0; its state column says why
(StageDir.state of the first stage of the point that is not done).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .. import atomic
from .plan import Plan
from .store import Store, point_state

COLUMNS = ["point", "task", "k", "baseline", "seed", "sft_acc", "rl_acc", "rl_format",
           "rl_tokens", "rl_backtracks", "wall_s", "state"]


def point_label(store: Store, stages: dict[str, str]) -> str:
    """"done", or the point's state (store.point_state) and the role it comes from, e.g.
    "interrupted (killed): rl"."""
    st, role = point_state({r: store.stage(sid).state() for r, sid in stages.items()})
    return st.label if role is None else f"{st.label}: {role}"


def rows(plan: Plan, store: Store) -> list[dict[str, Any]]:
    out = []
    for pp in plan.points:
        p = pp.point
        summaries = {role: store.stage(sid).summary() if store.stage(sid).is_done() else None
                     for role, sid in pp.stages.items()}
        sft_eval, rl_eval = summaries.get("sft_eval"), summaries.get("rl_eval")
        row = {"point": p.name, "task": p.task, "k": p.k, "baseline": p.baseline or "", "seed": p.seed,
               **{f"axis.{k}": v for k, v in p.axes.items()},
               "sft_acc": _get(sft_eval, "accuracy"), "rl_acc": _get(rl_eval, "accuracy"),
               "rl_format": _get(rl_eval, "format_rate"), "rl_tokens": _get(rl_eval, "mean_response_tokens"),
               "rl_backtracks": _get(rl_eval, "mean_backtracks"),
               "wall_s": sum(s.get("wall_s", 0.0) for s in summaries.values() if s),
               "state": point_label(store, pp.stages)}
        out.append(row)
    return out


def _get(summary: dict | None, key: str) -> float:
    if not summary or summary.get(key) is None:
        return math.nan
    return float(summary[key])


def write(rows_: list[dict], sweep_dir: Path) -> tuple[Path, Path]:
    import pandas as pd

    df = pd.DataFrame(rows_)
    df["k"] = df["k"].astype("Int64")      # baselines have no k: missing, not a float NaN
    csv, pq = sweep_dir / "results.csv", sweep_dir / "results.parquet"
    with atomic.atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic.atomic_path(pq) as tmp:
        df.to_parquet(tmp, index=False)
    return csv, pq


def render(rows_: list[dict], title: str = "results"):
    """A rich table: task, k, SFT accuracy, RL accuracy, format rate, tokens, wall time."""
    from rich.table import Table

    t = Table(title=title)
    for col, justify in [("task", "left"), ("k", "right"), ("seed", "right"), ("SFT acc", "right"),
                         ("RL acc", "right"), ("format", "right"), ("tokens", "right"),
                         ("backtracks", "right"), ("wall", "right"), ("state", "left")]:
        t.add_column(col, justify=justify)
    for r in rows_:
        t.add_row(r["task"], r["baseline"] or str(r["k"]), str(r["seed"]), _pct(r["sft_acc"]),
                  _pct(r["rl_acc"]), _pct(r["rl_format"]), _num(r["rl_tokens"]),
                  _num(r["rl_backtracks"], 2), _dur(r["wall_s"]), r["state"])
    return t


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


def _num(x: float, digits: int = 0) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _dur(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s"
