"""Aggregate a loaded sweep: the main task x k table (from analysis.study: paired two-level
bootstrap over seeds and test items), per-difficulty accuracy, training curves, and
side-by-side comparisons of sweeps.

`bootstrap_binary` / `bootstrap_mean` are the unpaired two-level bootstraps used where only
summaries (accuracy, n per seed) exist and for the difficulty table: each replicate draws the
seeds with replacement, then each drawn seed's items with replacement, and takes the mean over
seeds of the per-seed means. For 0/1 data the item draw is done exactly as Binomial(n, p) / n.

Missing is missing: a point whose eval did not finish contributes nothing, and a cell with
no finished point is NaN (shown as "-"), never 0.
"""

from __future__ import annotations

import zlib
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .load import Sweep, difficulty_columns

N_BOOT = 2000
LEVEL = 0.95


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator per (seed, cell), so one cell's CI does not depend on the others."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def bootstrap_binary(n: Sequence[float], correct: Sequence[float], *, n_boot: int = N_BOOT,
                     level: float = LEVEL, seed: int = 0, key: str = "") -> tuple[float, float, float]:
    """(mean, lo, hi) of the mean over seeds of per-seed accuracy correct/n, with a two-level
    bootstrap (seeds, then items within a seed). A seed with unknown n (NaN) keeps its
    accuracy fixed within a replicate (only seeds are resampled for it)."""
    n = np.asarray(n, dtype=float)
    c = np.asarray(correct, dtype=float)
    ok = np.isfinite(c) & ((n > 0) | np.isnan(n))
    n, c = n[ok], c[ok]
    if len(c) == 0:
        return (np.nan, np.nan, np.nan)
    p = np.where(np.isnan(n), c, c / np.where(np.isnan(n), 1.0, n))   # c holds p when n is NaN
    mean = float(p.mean())
    rng = _rng(seed, key)
    S = len(p)
    pick = rng.integers(0, S, size=(n_boot, S)) if S > 1 else np.zeros((n_boot, 1), dtype=np.int64)
    flat = pick.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=S)
    parts = []
    for s in range(S):          # all of one seed's draws at once, by inverse transform (exact)
        if np.isnan(n[s]):
            parts.append(np.full(counts[s], p[s]))
        else:
            cdf = _binom_cdf(int(n[s]), float(np.clip(p[s], 0.0, 1.0)))
            parts.append(np.searchsorted(cdf, rng.random(counts[s]), side="right") / n[s])
    draws = np.empty(flat.shape)
    draws[order] = np.concatenate(parts)
    draws = draws.reshape(pick.shape)
    reps = draws.mean(axis=1)
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


_LOGFACT = np.zeros(1)


def _binom_cdf(n: int, p: float) -> np.ndarray:
    """CDF of Binomial(n, p) at 0..n (sampling by searchsorted of a uniform is ~5x faster
    than numpy's binomial with per-seed parameters)."""
    global _LOGFACT
    if p <= 0.0 or p >= 1.0:
        cdf = np.zeros(n + 1) if p >= 1.0 else np.ones(n + 1)
        cdf[-1] = 1.0
        return cdf
    if len(_LOGFACT) <= n:
        _LOGFACT = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, max(n, 2 * len(_LOGFACT)) + 1)))])
    k = np.arange(n + 1)
    logpmf = _LOGFACT[n] - _LOGFACT[k] - _LOGFACT[n - k] + k * np.log(p) + (n - k) * np.log1p(-p)
    cdf = np.cumsum(np.exp(logpmf - logpmf.max()))
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def bootstrap_mean(groups: Sequence[Sequence[float]], *, n_boot: int = N_BOOT, level: float = LEVEL,
                   seed: int = 0, key: str = "") -> tuple[float, float, float]:
    """(mean, lo, hi) for any values (e.g. backtracks per response): the mean over groups
    (seeds) of per-group means, two-level bootstrap as above."""
    groups = [np.asarray(g, dtype=float) for g in groups]
    groups = [g[np.isfinite(g)] for g in groups]
    groups = [g for g in groups if len(g)]
    if not groups:
        return (np.nan, np.nan, np.nan)
    mean = float(np.mean([g.mean() for g in groups]))
    rng = _rng(seed, key)
    S = len(groups)
    pick = rng.integers(0, S, size=(n_boot, S))
    reps = np.empty((n_boot, S))
    for g_idx, g in enumerate(groups):
        where = np.nonzero(pick == g_idx)
        if len(where[0]):
            draws = rng.integers(0, len(g), size=(len(where[0]), len(g)))
            reps[where] = g[draws].mean(axis=1)
    lo, hi = np.quantile(reps.mean(axis=1), [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


# ---------------------------------------------------------------------------- main table

def _variant_order(df: pd.DataFrame) -> pd.DataFrame:
    """k rows by k, then baselines by name."""
    df = df.copy()
    df["_is_base"] = df["k"].isna()
    df["_k"] = df["k"].astype("Float64").fillna(-1)
    return df


def main_table(sweep: Sweep, *, role: str = "rl_eval", n_boot: int = N_BOOT, level: float = LEVEL,
               seed: int = 0, baseline: str = "cold_start", protocol: str | None = None,
               study=None) -> pd.DataFrame:
    """One row per task x axes x variant (k or baseline) for one decoding protocol (default:
    the primary one, the paper's when present): `role`'s accuracy (mean over seeds and test
    items) with its 95% CI, accuracy before RL, the paired differences from cold start and
    k=0 with CIs, the RL gain, the SFT set size, format rate, backtracks per response, seeds
    done / planned, `best` (the declared best k: its paired CI against every other k excludes
    0), and `gain` (over `baseline`). See analysis.study for the statistics; pass a `study`
    already computed to reuse its resamples."""
    from .study import study as make_study

    st = study if study is not None else make_study(sweep, n_boot=n_boot, level=level, seed=seed)
    df = st.table(protocol, role=role)
    if baseline != "cold_start" and len(df):
        ref = df[df["baseline"] == baseline].set_index(["task", *sweep.axes])["acc"]
        key = pd.MultiIndex.from_frame(df[["task", *sweep.axes]]) if sweep.axes else df["task"]
        df["gain"] = df["acc"].to_numpy() - ref.reindex(key).to_numpy() if len(ref) else np.nan
    return df


def _mean(s) -> float:
    if s is None:
        return np.nan
    s = pd.to_numeric(pd.Series(s), errors="coerce").dropna()
    return float(s.mean()) if len(s) else np.nan


# ---------------------------------------------------------------------------- difficulty

def difficulty_table(sweep: Sweep, *, role: str = "rl_eval", items: pd.DataFrame | None = None,
                     columns: Iterable[str] | None = None, n_boot: int = N_BOOT, level: float = LEVEL,
                     seed: int = 0, protocol: str | None = None) -> pd.DataFrame:
    """Accuracy per difficulty level (e.g. knights-and-knaves by number of people): one row
    per task x axes x variant x difficulty column x level, mean and CI over seeds and items,
    for one decoding protocol (default: the primary one)."""
    items = sweep.items if items is None else items
    out_cols = ["task", *sweep.axes, "variant", "k", "difficulty", "level", "acc", "acc_lo", "acc_hi",
                "n_items", "seeds"]
    if items.empty or "correct" not in items:
        return pd.DataFrame(columns=out_cols)
    items = items[items["role"] == role]
    if "protocol" in items and len(items):
        from .study import protocol_order

        items = items[items["protocol"] == (protocol or protocol_order(items["protocol"].astype(str).unique())[0])]
    rows = []
    for task, ti in items.groupby("task", sort=True, observed=True):
        for dcol in (list(columns) if columns is not None else difficulty_columns(ti)):
            if dcol not in ti:
                continue
            sub = ti[ti[dcol].notna()]
            group = [*sweep.axes, "variant", dcol]
            for key, g in sub.groupby(group, sort=True, dropna=False, observed=True):
                key = key if isinstance(key, tuple) else (key,)
                per_seed = g.groupby("seed", observed=True)["correct"].agg(["size", "sum"])
                mean, lo, hi = bootstrap_binary(per_seed["size"], per_seed["sum"], n_boot=n_boot,
                                                level=level, seed=seed,
                                                key=f"{sweep.name}/{role}/{task}/{key}")
                kv = dict(zip(group, key))
                rows.append({"task": task, **{a: kv[a] for a in sweep.axes}, "variant": kv["variant"],
                             "k": g["k"].iloc[0], "difficulty": dcol, "level": kv[dcol],
                             "acc": mean, "acc_lo": lo, "acc_hi": hi, "n_items": len(g),
                             "seeds": len(per_seed)})
    if not rows:
        return pd.DataFrame(columns=out_cols)
    df = pd.DataFrame(rows)
    df["k"] = df["k"].astype("Int64")
    df = _variant_order(df).sort_values(["task", *sweep.axes, "difficulty", "_is_base", "_k", "variant",
                                         "level"], kind="stable")
    return df.drop(columns=["_is_base", "_k"]).reset_index(drop=True)[out_cols]


# ---------------------------------------------------------------------------- curves

def curves(steps: pd.DataFrame, metrics: Iterable[str], *, role: str = "rl",
           by: Sequence[str] = ("task", "variant")) -> pd.DataFrame:
    """Mean, std, min, max and number of seeds of each metric per (by..., step), over the
    points (seeds) of each group. Metrics absent from `steps` are skipped."""
    if steps.empty or "role" not in steps:
        return pd.DataFrame()
    metrics = [m for m in metrics if m in steps.columns]
    keys = [*by, "step"]
    df = steps.loc[(steps["role"] == role).to_numpy(), keys + metrics]    # only the columns needed
    if df.empty or not metrics:
        return pd.DataFrame()
    g = df.groupby(keys, observed=True, sort=True)[metrics]
    agg = g.agg(["mean", "std", "min", "max", "count"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    return agg.reset_index()


# ---------------------------------------------------------------------------- comparison

def compare_table(sweeps: Sequence[Sweep], labels: Sequence[str] | None = None, **kw) -> pd.DataFrame:
    """Matching cells of several sweeps side by side: for each (task, common axes, variant),
    each sweep's accuracy and CI, and the difference to the first sweep. Cells present in
    only some sweeps show NaN for the others."""
    labels = list(labels or _labels(sweeps))
    common_axes = [a for a in sweeps[0].axes if all(a in s.axes for s in sweeps)]
    key = ["task", *common_axes, "variant"]
    merged = None
    for s, lab in zip(sweeps, labels):
        t = main_table(s, **kw)
        # collapse axes the other sweeps do not have: keep them as separate rows by label
        t = t[key + ["k", "baseline", "acc", "acc_lo", "acc_hi", "seeds", "seeds_planned"]]
        t = t.groupby(key, sort=False, dropna=False).first().reset_index()
        t = t.rename(columns={c: f"{c}[{lab}]" for c in ("acc", "acc_lo", "acc_hi", "seeds", "seeds_planned")})
        merged = t if merged is None else merged.merge(t, on=key + ["k", "baseline"], how="outer", sort=False)
    for lab in labels[1:]:
        merged[f"delta[{lab}]"] = merged[f"acc[{lab}]"] - merged[f"acc[{labels[0]}]"]
    merged["k"] = merged["k"].astype("Int64")
    merged = _variant_order(merged).sort_values(["task", *common_axes, "_is_base", "_k", "variant"],
                                                kind="stable")
    return merged.drop(columns=["_is_base", "_k"]).reset_index(drop=True)


def compare_points(sweeps: Sequence[Sweep], labels: Sequence[str] | None = None,
                   role: str = "rl_eval") -> pd.DataFrame:
    """Point-level side by side: each point (task, variant, seed, common axes) with each
    sweep's accuracy and state."""
    labels = list(labels or _labels(sweeps))
    common_axes = [a for a in sweeps[0].axes if all(a in s.axes for s in sweeps)]
    key = ["task", *common_axes, "variant", "seed"]
    merged = None
    for s, lab in zip(sweeps, labels):
        e = s.evals[s.evals.role == role][key + ["point", "accuracy"]]
        e = e.merge(s.points[["point", "state"]], on="point", how="left")     # the point's state
        e["state"] = e["state"].astype(str)
        e = e.rename(columns={c: f"{c}[{lab}]" for c in ("point", "accuracy", "state")})
        merged = e if merged is None else merged.merge(e, on=key, how="outer", sort=False)
    return merged.reset_index(drop=True)


def _labels(sweeps: Sequence[Sweep]) -> list[str]:
    out, seen = [], {}
    for s in sweeps:
        lab = s.name
        if lab in seen:
            seen[lab] += 1
            lab = f"{lab}#{seen[lab]}"
        else:
            seen[lab] = 1
        out.append(lab)
    return out
