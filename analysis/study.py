"""The study's numbers from a loaded sweep, all from one set of paired resamples:

    st = study(sweep)
    st.cells    one row per cell (task x axes x variant x eval role x protocol): accuracy over
                seeds and items with its 95% CI, seeds done / planned, items, samples,
                format rate, backtracks and tokens per response, and where the CI comes from
    st.diffs    one row per paired difference: each variant vs cold start and vs k=0 (same
                role, protocol, axes), and after RL vs before RL (the RL gain) of each variant
    st.best     one row per "which is best" question: k within each task x axes, and each
                grid axis within each task x variant x other axes, per role and protocol,
                with the declared winner (or none) and the statement in words
    st.sizes    SFT set size (the sft stage summary's `examples`) per task x axes x variant
    st.notes    what a reader must know: one seed, protocols missing, sizes that differ
    st.table()  the main table: one row per task x axes x variant, before / after RL

A difference is estimated paired: both cells on the seeds and test items they share, one
bootstrap draw for both (analysis.stats). Every cell of a task and protocol shares that draw.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import stats as S
from .load import EVAL_ROLES, OLD_PROTOCOL, Sweep

COLD = "cold_start"
K0 = "k0"
PROTOCOL_ORDER = ("sample", "greedy")        # the paper's protocol first
PROTOCOL_NAMES = {"sample": "one sample at T=1.0 (the paper's protocol)", "greedy": "greedy decoding"}
ROLE_NAMES = {"sft_eval": "before RL", "rl_eval": "after RL"}
SIZE_RATIO = 2.0          # SFT sets whose sizes differ by more than this are flagged
BASELINE_NAMES = {COLD: "cold start", "short_cot_correct": "short CoT, correct",
                  "short_cot_incorrect": "short CoT, incorrect", "long_cot_correct": "long CoT, correct",
                  "long_cot_incorrect": "long CoT, incorrect", "long_cot_wrong_format": "long CoT, wrong format"}


class ProtocolError(ValueError):
    """A protocol was asked for that the sweep's eval items do not have."""


def variant_name(variant: Any) -> str:
    v = str(variant)
    if v.startswith("k") and v[1:].isdigit():
        return f"k={v[1:]}"
    return BASELINE_NAMES.get(v, v.replace("_", " "))


def protocol_order(protocols: Iterable[str]) -> list[str]:
    """The protocols present, the paper's first (the primary one: the summaries' accuracy)."""
    ps = list(dict.fromkeys(str(p) for p in protocols))
    return sorted(ps, key=lambda p: (PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else len(PROTOCOL_ORDER), p))


def axis_name(axis: str) -> str:
    return "k" if axis == "k" else axis.split(".")[-1]


def _fmt_axes(axes: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{axis_name(a)}={v}" for a, v in zip(axes, values))


def points_of(diff: S.Estimate) -> str:
    return f"{100 * diff.value:+.1f} points [{100 * diff.lo:+.1f}, {100 * diff.hi:+.1f}]"


@dataclass
class Study:
    name: str
    axes: list[str]
    protocols: list[str]
    cells: pd.DataFrame
    diffs: pd.DataFrame
    best: pd.DataFrame
    sizes: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    level: float = S.LEVEL
    old_items: bool = False       # items without a protocol column (read as greedy)

    @property
    def primary(self) -> str:
        return self.protocols[0] if self.protocols else OLD_PROTOCOL

    def statements(self, role: str = "rl_eval", protocol: str | None = None) -> list[str]:
        """The best-k (and best-axis-value) statements in words for one role and protocol."""
        protocol = protocol or self.primary
        b = self.best
        if b.empty:
            return []
        sel = b[(b["role"] == role) & (b["protocol"] == protocol)]
        return list(sel["statement"])

    def table(self, protocol: str | None = None, role: str = "rl_eval") -> pd.DataFrame:
        """One row per task x axes x variant for one protocol: `role`'s accuracy and CI
        (acc, acc_lo, acc_hi), before RL (sft_acc...), the paired differences from cold start
        (d_cold...) and k=0 (d_k0...) of both, the RL gain, the SFT set size, whether this k is
        the declared best, and the legacy columns (gain = d_cold, best, missing)."""
        protocol = protocol or self.primary
        return _wide(self, protocol, role)


# ---------------------------------------------------------------------------- building

def study(sweep: Sweep, *, n_boot: int = S.N_BOOT, level: float = S.LEVEL, seed: int = 0,
          size_ratio: float = SIZE_RATIO, items: pd.DataFrame | None = None, primary: str | None = None) -> Study:
    """Everything the report shows, from the sweep's eval items. `primary`: the protocol of
    the headline statements (default: "sample", the paper's, when present, else "greedy")."""
    axes = list(sweep.axes)
    items = sweep.items if items is None else items
    old_items = _old_items(sweep)
    protocols = protocol_order(items["protocol"].astype(str).unique()) if len(items) else [OLD_PROTOCOL]
    if primary is not None:
        if primary not in protocols:
            raise ProtocolError(f"--protocol {primary}: the sweep's eval items have {', '.join(protocols)}")
        protocols = [primary] + [p for p in protocols if p != primary]
    groups, extra = _groups(sweep, items, axes, n_boot=n_boot, level=level, seed=seed)
    cells = _cells(sweep, groups, extra, axes, protocols, n_boot=n_boot, level=level, seed=seed)
    diffs = _diffs(groups, axes)
    best = _best(groups, axes, level)
    sizes = sft_sizes(sweep)
    st = Study(sweep.name, axes, protocols, cells, diffs, best, sizes, level=level, old_items=old_items)
    st.notes = _notes(st, sweep, size_ratio)
    return st


def _old_items(sweep: Sweep) -> bool:
    """True when some finished eval's items.parquet has no protocol column."""
    import pyarrow.parquet as pq

    ev = sweep.stages
    if ev.empty:
        return False
    done = ev[ev["role"].isin(list(EVAL_ROLES)) & (ev["state"] == "done")]
    for sid in dict.fromkeys(done["stage_id"]):
        path = sweep.store / sid / "items.parquet"
        if path.exists():
            try:
                return "protocol" not in pq.ParquetFile(path).schema_arrow.names
            except OSError:
                continue
    return False


def _groups(sweep: Sweep, items: pd.DataFrame, axes: list[str], **kw) -> tuple[dict, dict]:
    """{(task, protocol): Group of cells keyed (variant, axes values, role)} and the
    per-cell extras (samples, format rate, backtracks, tokens)."""
    groups: dict[tuple, S.Group] = {}
    extra: dict[tuple, dict] = {}
    if items.empty or "correct" not in items:
        return groups, extra
    keys = ["task", "protocol", "variant", *axes, "role", "seed", "index"]
    df = items[[c for c in dict.fromkeys(keys + ["sample", "correct", "format_ok", "backtracks",
                                                "response_tokens"]) if c in items.columns]]
    df = df[df["seed"].notna()]
    metrics = {"correct": "mean"}
    for c in ("format_ok", "backtracks", "response_tokens"):
        if c in df:
            metrics[c] = "mean"
    per = df.groupby(keys, observed=True, sort=True, dropna=False).agg(
        {**metrics, "sample": "nunique"} if "sample" in df else metrics).reset_index()
    cell_keys = ["task", "protocol", "variant", *axes, "role"]
    by_group: dict[tuple, dict] = {}
    for key, g in per.groupby(cell_keys, observed=True, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        task, protocol, variant = str(key[0]), str(key[1]), str(key[2])
        ax_vals, role = tuple(key[3:3 + len(axes)]), str(key[-1])
        seeds = np.sort(g["seed"].unique())
        idx = np.sort(g["index"].unique())
        y = np.full((len(seeds), len(idx)), np.nan)
        y[np.searchsorted(seeds, g["seed"].to_numpy()), np.searchsorted(idx, g["index"].to_numpy())] = \
            g["correct"].to_numpy(dtype=float)
        ck = (variant, ax_vals, role)
        by_group.setdefault((task, protocol), {})[ck] = S.Cell(seeds, idx, y)
        extra[(task, protocol, *ck)] = {
            "samples": int(g["sample"].max()) if "sample" in g else 1,
            **{c: float(g[c].mean()) for c in ("format_ok", "backtracks", "response_tokens") if c in g}}
    for (task, protocol), cells in by_group.items():
        groups[(task, protocol)] = S.Group(cells, key=f"{sweep.name}/{task}/{protocol}", **kw)
    return groups, extra


def _cells(sweep: Sweep, groups: dict, extra: dict, axes: list[str], protocols: list[str], *,
           n_boot: int, level: float, seed: int) -> pd.DataFrame:
    """Every (task, axes, variant, eval role) of the plan x every protocol, finished or not."""
    from .aggregate import bootstrap_binary

    ev = sweep.evals
    cols = ["task", *axes, "variant", "k", "baseline", "role", "protocol", "seeds", "seeds_planned", "items",
            "samples", "acc", "acc_lo", "acc_hi", "format_rate", "backtracks", "response_tokens", "ci", "missing"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    states = sweep.points.set_index("point")["state"].astype(str)
    rows = []
    for key, g in ev.groupby(["task", *axes, "variant", "role"], sort=False, dropna=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        task, ax_vals, variant, role = str(key[0]), tuple(key[1:1 + len(axes)]), str(key[-2]), str(key[-1])
        done = g[g["state"] == "done"]
        missing = "; ".join(f"{p}: {states.get(p, 'pending')}" for p in g["point"] if p not in set(done["point"]))
        for protocol in protocols:
            grp = groups.get((task, protocol))
            ck = (variant, ax_vals, role)
            row = {"task": task, **dict(zip(axes, ax_vals)), "variant": variant, "k": g["k"].iloc[0],
                   "baseline": g["baseline"].iloc[0], "role": role, "protocol": protocol,
                   "seeds_planned": len(g), "missing": missing}
            if grp is not None and ck in grp.cells:
                e = grp.mean(ck)
                ex = extra[(task, protocol, *ck)]
                row.update(seeds=e.seeds, items=e.items, samples=ex["samples"], acc=e.value, acc_lo=e.lo,
                           acc_hi=e.hi, format_rate=ex.get("format_ok", np.nan),
                           backtracks=ex.get("backtracks", np.nan),
                           response_tokens=ex.get("response_tokens", np.nan),
                           ci=_ci_source(e.seeds))
            elif protocol == protocols[0] and len(done):
                # no items.parquet: the summaries' accuracy (the primary protocol's), CI over items from n
                n = done["n"].to_numpy(dtype=float)
                acc = done["accuracy"].to_numpy(dtype=float)
                correct = np.where(np.isnan(n), acc, np.round(acc * n))
                mean, lo, hi = bootstrap_binary(n, correct, n_boot=n_boot, level=level, seed=seed,
                                                key=f"{sweep.name}/{role}/{task}/{variant}/{ax_vals}")
                row.update(seeds=len(done), items=float(np.nanmean(n)) if np.isfinite(n).any() else np.nan,
                           samples=1, acc=mean, acc_lo=lo, acc_hi=hi,
                           format_rate=_mean(done["format_rate"]), backtracks=_mean(done["mean_backtracks"]),
                           response_tokens=_mean(done["mean_response_tokens"]),
                           ci="summary only (no items.parquet): not paired")
            else:
                row.update(seeds=0, items=0, samples=0, acc=np.nan, acc_lo=np.nan, acc_hi=np.nan,
                           format_rate=np.nan, backtracks=np.nan, response_tokens=np.nan, ci="")
            rows.append(row)
    df = pd.DataFrame(rows)
    df["k"] = df["k"].astype("Int64")
    return _order(df, ["task", *axes, "role", "protocol"])[cols]


def _ci_source(seeds: int) -> str:
    return "seeds x items" if seeds > 1 else "items only (1 seed)"


def _mean(s) -> float:
    s = pd.to_numeric(pd.Series(s), errors="coerce").dropna()
    return float(s.mean()) if len(s) else np.nan


def _order(df: pd.DataFrame, before: list[str]) -> pd.DataFrame:
    """k variants by k, then cold start, then the other baselines by name."""
    df = df.copy()
    kk = df["k"].astype("Float64")
    df["_base"] = np.where(kk.notna().to_numpy(dtype=bool), 0, np.where(df["variant"] == COLD, 1, 2))
    df["_k"] = kk.fillna(-1).to_numpy(dtype=float)
    df["_role"] = df["role"].map({"sft_eval": 0, "rl_eval": 1}).fillna(2) if "role" in df else 0
    if "protocol" in df:
        df["_proto"] = df["protocol"].map(lambda p: PROTOCOL_ORDER.index(p) if p in PROTOCOL_ORDER else 9)
    else:
        df["_proto"] = 0
    sort = [c for c in before if c not in ("role", "protocol")] + ["_proto", "_role", "_base", "_k", "variant"]
    df = df.sort_values(sort, kind="stable").drop(columns=["_base", "_k", "_role", "_proto"])
    return df.reset_index(drop=True)


def _diffs(groups: dict, axes: list[str]) -> pd.DataFrame:
    cols = ["task", *axes, "variant", "role", "protocol", "versus", "diff", "lo", "hi", "significant",
            "seeds", "items"]
    rows = []
    for (task, protocol), grp in groups.items():
        for ck in grp.cells:
            variant, ax_vals, role = ck
            base = {"task": task, **dict(zip(axes, ax_vals)), "variant": variant, "role": role,
                    "protocol": protocol}
            comps = []
            if variant != COLD:
                comps.append((COLD, (COLD, ax_vals, role)))
            if variant != K0:
                comps.append((K0, (K0, ax_vals, role)))
            if role == "rl_eval":
                comps.append(("before RL", (variant, ax_vals, "sft_eval")))
            for versus, other in comps:
                if other not in grp.cells:
                    continue
                e = grp.diff(ck, other)
                rows.append({**base, "versus": versus, "diff": e.value, "lo": e.lo, "hi": e.hi,
                             "significant": e.significant, "seeds": e.seeds, "items": e.items})
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    df["k"] = df["variant"].map(_k_of).astype("Int64")
    df = _order(df, ["task", *axes, "versus", "role", "protocol"])
    return df[cols]


def _k_of(variant: Any):
    v = str(variant)
    return int(v[1:]) if v.startswith("k") and v[1:].isdigit() else None


def _best(groups: dict, axes: list[str], level: float) -> pd.DataFrame:
    """Best k within task x axes, and best value of each axis within task x variant x the
    other axes; per role and protocol."""
    rows = []
    for (task, protocol), grp in groups.items():
        by_role: dict[str, list] = {}
        for ck in grp.cells:
            by_role.setdefault(ck[2], []).append(ck)
        for role, cks in by_role.items():
            # k
            ctx: dict[tuple, list] = {}
            for ck in cks:
                if _k_of(ck[0]) is not None:
                    ctx.setdefault(ck[1], []).append(ck)
            for ax_vals, names in ctx.items():
                if len(names) >= 2:
                    b = grp.best(sorted(names, key=lambda c: _k_of(c[0])))
                    rows.append(_best_row(task, protocol, role, "k", _fmt_axes(axes, ax_vals), b,
                                          lambda c: variant_name(c[0]), level))
            # each grid axis
            for j, axis in enumerate(axes):
                ctx = {}
                for ck in cks:
                    other = ck[1][:j] + ck[1][j + 1:]
                    ctx.setdefault((ck[0], other), []).append(ck)
                others = axes[:j] + axes[j + 1:]
                for (variant, other), names in ctx.items():
                    if len({c[1][j] for c in names}) >= 2:
                        b = grp.best(sorted(names, key=lambda c: str(c[1][j])))
                        where = ", ".join(x for x in (variant_name(variant), _fmt_axes(others, other)) if x)
                        rows.append(_best_row(task, protocol, role, axis, where, b,
                                              lambda c, j=j, axis=axis: f"{axis_name(axis)}={c[1][j]}", level))
    cols = ["task", "role", "protocol", "axis", "context", "top", "runner_up", "margin", "lo", "hi", "declared",
            "seeds", "items", "statement", "top_cell"]
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows)[cols]


def _best_row(task: str, protocol: str, role: str, axis: str, context: str, b: S.Best, name, level: float) -> dict:
    what = axis_name(axis)
    where = f"{task}" + (f" ({context})" if context else "") + f", {ROLE_NAMES.get(role, role)}, " \
        f"{'greedy' if protocol == 'greedy' else 'sampled' if protocol == 'sample' else protocol}"
    pct = f"{round(100 * level)}%"
    m = b.margin
    basis = f"paired over {m.seeds} seed{'s' if m.seeds != 1 else ''} x {m.items:,} items"
    if m.seeds == 1:
        basis += "; one seed: the CI covers test items only, not training runs"
    if b.top is None or b.runner_up is None:
        text = f"{where}: fewer than two finished values of {what}; nothing to compare."
    elif b.declared:
        text = (f"{where}: {name(b.top)} is better than every other {what}: {points_of(m)} over the "
                f"runner-up {name(b.runner_up)} ({basis}; {pct} CI).")
    else:
        open_ = [name(o) for o, e in b.versus.items() if not e.lo > 0]
        lead = (f"the highest mean, {name(b.top)}, leads the runner-up {name(b.runner_up)} by {points_of(m)}"
                if m.lo <= 0 else
                f"{name(b.top)} leads the runner-up {name(b.runner_up)} by {points_of(m)} but its CI "
                f"against {', '.join(open_)} includes 0")
        text = f"{where}: no {what} is better than the others at this scale: {lead} ({basis}; {pct} CI)."
    return {"task": task, "role": role, "protocol": protocol, "axis": axis, "context": context,
            "top": name(b.top) if b.top is not None else None,
            "runner_up": name(b.runner_up) if b.runner_up is not None else None,
            "margin": m.value, "lo": m.lo, "hi": m.hi, "declared": b.declared, "seeds": m.seeds,
            "items": m.items, "statement": text, "top_cell": b.top}


# ---------------------------------------------------------------------------- SFT set sizes

def sft_sizes(sweep: Sweep) -> pd.DataFrame:
    """`examples` of each finished SFT stage's summary, per task x axes x variant (mean, min,
    max over the points' seeds). Variants without an SFT stage (cold start) are absent."""
    axes = list(sweep.axes)
    cols = ["task", *axes, "variant", "k", "examples", "examples_min", "examples_max"]
    st = sweep.stages
    if st.empty:
        return pd.DataFrame(columns=cols)
    sft = st[(st["role"] == "sft") & (st["state"] == "done")]
    rows, cache = [], {}
    for r in sft[["task", *axes, "variant", "stage_id"]].to_dict("records"):
        sid = r["stage_id"]
        if sid not in cache:
            try:
                cache[sid] = json.loads((sweep.store / sid / "summary.json").read_text()).get("examples")
            except (OSError, ValueError, AttributeError):
                cache[sid] = None
        ex = cache[sid]
        if isinstance(ex, (int, float)) and not isinstance(ex, bool):
            rows.append({**{c: r[c] for c in ("task", *axes, "variant")}, "examples": float(ex)})
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    g = df.groupby(["task", *axes, "variant"], sort=False, dropna=False, observed=True)["examples"]
    out = g.agg(examples="mean", examples_min="min", examples_max="max").reset_index()
    out["k"] = out["variant"].map(_k_of).astype("Int64")
    return out[cols]


def size_flags(sizes: pd.DataFrame, axes: Sequence[str], ratio: float = SIZE_RATIO) -> list[str]:
    """One line per task x axes whose SFT sets differ by more than `ratio`: every size, and
    the pairs whose comparison mixes content with size."""
    out = []
    if sizes.empty:
        return out
    for key, g in sizes.groupby(["task", *axes], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g[g["examples"] > 0]
        if len(g) < 2 or g["examples"].max() / g["examples"].min() <= ratio:
            continue
        # (label, size) entries; k sets of one size count as one entry
        entries = []
        ks = g[g["k"].notna()]
        grouped = len(ks) > 1 and ks["examples"].nunique() == 1
        if grouped:
            entries.append((f"k={'/'.join(str(int(k)) for k in ks['k'])}", float(ks["examples"].iloc[0]), " each"))
        entries += [(variant_name(r.variant), float(r.examples), "") for r in g.itertuples()
                    if not (grouped and r.variant in set(ks["variant"]))]
        parts = [f"{lab}: {int(round(n)):,}{each}" for lab, n, each in entries]
        pairs = []
        for i, a in enumerate(entries):
            for b in entries[i + 1:]:
                big, small = (a, b) if a[1] >= b[1] else (b, a)
                if big[1] / small[1] > ratio:
                    pairs.append(f"{big[0]} vs {small[0]} ({big[1] / small[1]:.1f}x)")
        where = str(key[0]) + (f" ({_fmt_axes(axes, key[1:])})" if axes else "")
        shown = pairs[:8] + ([f"and {len(pairs) - 8} more"] if len(pairs) > 8 else [])
        out.append(f"SFT set sizes differ in {where} (examples: {'; '.join(parts)}). A comparison between "
                   f"sets more than {ratio:g}x apart mixes the effect of their content with that of their "
                   f"size: {'; '.join(shown)}.")
    return out


def _size_ref(sizes: pd.DataFrame, task: str, ax_vals: tuple, axes: Sequence[str]) -> float:
    """The reference size in a task x axes: the median of the k sets (else of all sets)."""
    sel = sizes[sizes["task"] == task]
    for a, v in zip(axes, ax_vals):
        sel = sel[sel[a] == v]
    ks = sel[sel["k"].notna()]
    use = ks if len(ks) else sel
    return float(use["examples"].median()) if len(use) else np.nan


# ---------------------------------------------------------------------------- notes

def _notes(st: Study, sweep: Sweep, ratio: float) -> list[str]:
    notes = []
    c = st.cells
    done = c[c["seeds"] > 0] if not c.empty else c
    if len(done):
        smax = int(done["seeds"].max())
        if smax <= 1:
            notes.append("One training seed per point: every interval covers test-item sampling only, not "
                         "the run-to-run variance of training; a difference between two points may be a "
                         "difference between two runs. Add seeds (grid.seeds) before reading a ranking off "
                         "this table.")
        elif (done["seeds"] < done["seeds_planned"]).any():
            notes.append("Some cells have fewer finished seeds than planned; their intervals and "
                         "differences use the seeds they have (see 'seeds').")
    if st.old_items:
        notes.append("The eval items carry no protocol column (a sweep from before decoding protocols): "
                     "they are read as greedy decoding, one sample per item.")
    if len(done) and (done["ci"].str.startswith("summary")).any():
        notes.append("Some evals have no items.parquet: their accuracy and CI come from the summary "
                     "(accuracy, n), and they enter no paired difference.")
    notes += size_flags(st.sizes, st.axes, ratio)
    return notes


# ---------------------------------------------------------------------------- the wide table

def _wide(st: Study, protocol: str, role: str) -> pd.DataFrame:
    axes = st.axes
    key = ["task", *axes, "variant"]
    c = st.cells
    cols = key + ["k", "baseline", "protocol", "seeds", "seeds_planned", "n_items", "samples", "sft_examples",
                  "size_flag", "acc", "acc_lo", "acc_hi", "d_cold", "d_cold_lo", "d_cold_hi", "d_k0", "d_k0_lo",
                  "d_k0_hi", "rl_gain", "rl_gain_lo", "rl_gain_hi", "sft_acc", "sft_acc_lo", "sft_acc_hi",
                  "sft_d_cold", "sft_d_cold_lo", "sft_d_cold_hi", "sft_d_k0", "sft_d_k0_lo", "sft_d_k0_hi",
                  "format_rate", "backtracks", "sft_backtracks", "response_tokens", "gain", "best", "ci", "missing"]
    if c.empty:
        return pd.DataFrame(columns=cols)
    c = c[c["protocol"] == protocol]
    after = c[c["role"] == role].set_index(key)
    before = c[c["role"] == "sft_eval"].set_index(key)
    d = st.diffs
    d = d[d["protocol"] == protocol] if len(d) else d
    out = after.reset_index()[key + ["k", "baseline", "protocol", "seeds", "seeds_planned", "items", "samples",
                                     "acc", "acc_lo", "acc_hi", "format_rate", "backtracks", "response_tokens",
                                     "ci", "missing"]].rename(columns={"items": "n_items"})
    idx = pd.MultiIndex.from_frame(out[key])
    out["sft_acc"] = before["acc"].reindex(idx).to_numpy() if len(before) else np.nan
    out["sft_acc_lo"] = before["acc_lo"].reindex(idx).to_numpy() if len(before) else np.nan
    out["sft_acc_hi"] = before["acc_hi"].reindex(idx).to_numpy() if len(before) else np.nan
    out["sft_backtracks"] = before["backtracks"].reindex(idx).to_numpy() if len(before) else np.nan
    for prefix, r, versus in (("d_cold", role, COLD), ("d_k0", role, K0), ("rl_gain", role, "before RL"),
                              ("sft_d_cold", "sft_eval", COLD), ("sft_d_k0", "sft_eval", K0)):
        sel = d[(d["role"] == r) & (d["versus"] == versus)].set_index(key) if len(d) else None
        for suf, col in (("", "diff"), ("_lo", "lo"), ("_hi", "hi")):
            out[prefix + suf] = sel[col].reindex(idx).to_numpy(dtype=float) if sel is not None and len(sel) \
                else np.nan
    # SFT set sizes and their flag (more than SIZE_RATIO from the k sets' size)
    sz = st.sizes.set_index(key) if len(st.sizes) else None
    out["sft_examples"] = sz["examples"].reindex(idx).to_numpy(dtype=float) if sz is not None else np.nan
    flags = []
    for rd in out[["task", *axes, "sft_examples"]].to_dict("records"):
        ref = _size_ref(st.sizes, rd["task"], tuple(rd[a] for a in axes), axes) if sz is not None else np.nan
        ex = rd["sft_examples"]
        flags.append(bool(np.isfinite(ex) and np.isfinite(ref) and ex > 0
                          and max(ex / ref, ref / ex) > SIZE_RATIO))
    out["size_flag"] = flags
    # declared best k
    out["best"] = False
    b = st.best
    if len(b):
        b = b[(b["axis"] == "k") & (b["role"] == role) & (b["protocol"] == protocol) & b["declared"]]
        for r in b.itertuples(index=False):
            variant, ax_vals, _ = r.top_cell
            sel = (out["task"] == r.task) & (out["variant"] == variant)
            for a, v in zip(axes, ax_vals):
                sel &= out[a] == v
            out.loc[sel, "best"] = True
    out["gain"] = out["d_cold"]
    no_cold = out["gain"].isna() & (out["variant"] != COLD)
    if no_cold.any():       # unpaired (cells from summaries): the difference of the means
        cold = out[out["variant"] == COLD].set_index(["task", *axes])["acc"]
        if len(cold):
            ref = cold.reindex(pd.MultiIndex.from_frame(out[["task", *axes]]) if axes else out["task"]).to_numpy()
            out.loc[no_cold, "gain"] = (out["acc"].to_numpy() - ref)[no_cold.to_numpy()]
    out["k"] = out["k"].astype("Int64")
    return _order(out, ["task", *axes])[cols]
