"""Figures of a sweep, as matplotlib Figure objects drawn on the Agg canvas (no pyplot, no
global backend: safe in scripts, tests, threads and notebooks alike).

    accuracy_vs_k(table)            one panel per task (x protocol): accuracy before and after RL
                                    with 95% CIs per k and per baseline (each at its own slot,
                                    named with its SFT set size), cold start as a reference line,
                                    the best k starred only when it is declared (paired CI)
    forest(diffs)                   paired differences with CIs: each variant vs cold start, vs
                                    k=0, and after vs before RL; filled where the CI excludes 0
    backtracks_vs_k(table)          backtracks per response: in the SFT traces (= k), after SFT,
                                    after RL -- does RL keep the backtracking SFT taught?
    rl_curves(steps, task)          reward, validation accuracy, response length, backtracks over
                                    RL steps: one line per SFT data (mean over seeds), band min..max
    rl_seed_curves(steps, task)     one panel per SFT data: every seed's reward, their mean, the band
    sft_loss(steps)                 SFT loss over steps, one panel per task, one line per SFT data

Every series has its own (colour, line style): ten colours, then line styles (`series_styles`);
given `variants` (every variant of the sweep), the same for a variant in every figure. Every function returns None when there is
nothing to draw (no empty figures, no empty panels). `check_figure(fig)` lists what a reader
would miss or be misled by: an unlabelled axis, a panel without data, no legend, a legend that
leaves the figure or outgrows the plots, two legend entries drawn alike.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .study import COLD, PROTOCOL_NAMES, variant_name

# (panel title, y label, candidate metric keys in order of preference)
RL_PANELS = [
    ("reward", "mean reward", ("reward_mean", "reward", "critic/score/mean")),
    ("validation accuracy", "accuracy (%)", ("val_accuracy", "val/accuracy", "val_acc")),
    ("rollout accuracy", "accuracy (%)", ("accuracy", "train_accuracy")),
    ("response length", "tokens per response", ("response_length", "response_length_mean",
                                                "response_tokens", "mean_response_tokens")),
    ("backtracks per response", "backtracks", ("backtracks", "backtracks_mean", "mean_backtracks")),
]
PERCENT_KEYS = {"val_accuracy", "val/accuracy", "val_acc", "accuracy", "train_accuracy", "format_rate"}
SFT_LOSS_KEYS = ("loss", "sft_loss", "train/loss")
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]       # tab10
LINESTYLES = ["-", "--", ":", "-."]
BEST_GID = "best-k-marker"
AFTER_COLOR, BEFORE_COLOR, COLD_COLOR, STAR_COLOR = "#1f77b4", "#7f7f7f", "#2ca02c", "#d62728"
SEED_COLOR, MEAN_COLOR = "#9a9a9a", "#111111"


def new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _k_of(variant: Any) -> int | None:
    v = str(variant)
    return int(v[1:]) if v.startswith("k") and v[1:].isdigit() else None


def variant_sort_key(v: Any):
    """k variants by k, then cold start, then the other baselines by name."""
    k = _k_of(v)
    return (0, k, "") if k is not None else ((1, 0, "") if str(v) == COLD else (2, 0, str(v)))


def series_styles(keys: Sequence[Any]) -> dict[Any, tuple[str, str]]:
    """(colour, line style) per series, in the order given: ten distinct colours, then the
    same ten with the next line style, so no two series are drawn alike."""
    keys = list(dict.fromkeys(keys))
    return {k: (PALETTE[i % len(PALETTE)], LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)])
            for i, k in enumerate(keys)}


def variant_styles(variants: Sequence[Any]) -> dict[str, tuple[str, str]]:
    return series_styles(sorted({str(v) for v in variants}, key=variant_sort_key))


def label_of(variant: Any, examples: float | None = None) -> str:
    """What a series is: k=1; cold start (no SFT: RL from the base model); a baseline with
    its SFT set size."""
    v = str(variant)
    if _k_of(v) is not None:
        return variant_name(v)
    if v == COLD:
        return "cold start (no SFT: RL from the base model)"
    size = f", {int(round(examples)):,} ex." if examples is not None and np.isfinite(examples) else ""
    return f"{variant_name(v)} (SFT{size})"


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def _axes_list(fig: Figure, n: int, max_cols: int = 4, share_y: bool = False, rows_cols=None):
    rows, cols = rows_cols or _grid(n, max_cols)
    axs = fig.subplots(rows, cols, squeeze=False, sharey=share_y)
    flat = list(axs.flat)
    for ax in flat[n:]:
        ax.remove()              # no empty panels
    return flat[:n]


def _fig_legend(fig: Figure, axs, title: str | None = None, where: str = "right") -> None:
    """One legend for the figure, outside the panels (right, or below), with every label of
    every panel once. Constrained layout keeps it inside the figure."""
    handles, labels = {}, []
    for ax in axs:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles and not lab.startswith("_"):
                handles[lab] = h
                labels.append(lab)
    if not labels:
        return
    if where == "right":
        fig.legend([handles[lab] for lab in labels], labels, loc="outside right upper", ncol=1, fontsize=8,
                   title=title, title_fontsize=8, frameon=False)
    else:
        width_pt = fig.get_figwidth() * 72
        per_col = max(len(lab) for lab in labels) * 4.7 + 40       # fontsize 8: ~4.7 pt a character
        ncol = int(max(1, min(len(labels), 6, width_pt // per_col)))
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncol=ncol, fontsize=8,
                   title=title, title_fontsize=8, frameon=False)


def _combo_label(combo: Mapping[str, Any]) -> str:
    return ", ".join(f"{a.split('.')[-1]}={v}" for a, v in combo.items())


def _combos(table: pd.DataFrame, axes: Sequence[str]) -> list[dict]:
    if not axes:
        return [{}]
    uniq = table[list(axes)].drop_duplicates()
    return [dict(zip(axes, r)) for r in uniq.itertuples(index=False)]


def _select(df: pd.DataFrame, combo: Mapping[str, Any]) -> pd.DataFrame:
    for a, v in combo.items():
        df = df[df[a] == v]
    return df


def _percent_ylim(ax, values) -> None:
    """Percent axes start at 0 (a little below, so points at 0 show) and reach at least 10%."""
    v = np.asarray(values, dtype=float)
    top = np.nanmax(v) if np.isfinite(v).any() else 0.0
    ax.set_ylim(-0.03 * max(top, 10.0), min(102.0, max(10.0, top * 1.08 + 2)))


def _err(y, lo, hi) -> np.ndarray:
    return np.nan_to_num(np.clip(np.vstack([y - lo, hi - y]), 0, None))


# ---------------------------------------------------------------------------- accuracy per SFT data

def _slots(t: pd.DataFrame) -> tuple[list[str], dict[str, float]]:
    """x position of each variant: k at x = k, then the baselines one apart after a gap."""
    variants = sorted(dict.fromkeys(t["variant"].astype(str)), key=variant_sort_key)
    ks = [v for v in variants if _k_of(v) is not None]
    pos = {v: float(_k_of(v)) for v in ks}
    x = (max(pos.values()) if pos else -1.0) + 1.5
    for v in variants:
        if v not in pos:
            pos[v] = x
            x += 1.0
    return variants, pos


def _tick(variant: str, examples: Any) -> str:
    if _k_of(variant) is not None:
        return variant_name(variant)
    if variant == COLD:
        return "cold start\n(no SFT)"
    import textwrap

    name = "\n".join(textwrap.wrap(variant_name(variant), 10, break_long_words=False))
    ex = "" if examples is None or pd.isna(examples) else f"\n{int(round(float(examples))):,} ex."
    return name + ex


def accuracy_vs_k(table: pd.DataFrame, axes: Sequence[str] = (), title: str | None = None) -> Figure | None:
    """`table`: aggregate.main_table (or several protocols' tables concatenated: one panel
    column per protocol)."""
    if table.empty or (not table["acc"].notna().any() and not table["sft_acc"].notna().any()):
        return None
    tasks = [t for t in dict.fromkeys(table["task"])
             if table.loc[table.task == t, ["acc", "sft_acc"]].notna().any().any()]
    if not tasks:
        return None
    protocols = list(dict.fromkeys(table["protocol"])) if "protocol" in table else [None]
    n_slots = max(len(_slots(table[table.task == t])[0]) for t in tasks)
    w = max(4.2, 0.55 * n_slots + 1.6)
    n_panels = len(tasks) * len(protocols)
    fig = new_figure(w * len(protocols) + 3.2, 3.9 * len(tasks) + 0.4)
    axs = _axes_list(fig, n_panels, rows_cols=(len(tasks), len(protocols)), share_y=False)
    combos = _combos(table, axes)
    styles = series_styles([("after", i) for i in range(len(combos))] + [("before", i) for i in range(len(combos))])
    if len(combos) == 1:
        styles[("after", 0)], styles[("before", 0)] = (AFTER_COLOR, "-"), (BEFORE_COLOR, "--")
    else:       # one colour per setting; after RL solid, before RL dashed
        for i in range(len(combos)):
            styles[("before", i)] = (styles[("after", i)][0], "--")
    for j, (task, proto) in enumerate([(t, p) for t in tasks for p in protocols]):
        ax = axs[j]
        t = table[(table.task == task) & ((table["protocol"] == proto) if proto is not None else True)]
        variants, pos = _slots(t)
        width = 0.32 / max(1, len(combos))
        cold_drawn = False
        for ci_, combo in enumerate(combos):
            sel = _select(t, combo)
            suffix = f" ({_combo_label(combo)})" if axes else ""
            off = (ci_ - (len(combos) - 1) / 2) * 2 * width
            for when, col, lo, hi, marker in (("after", "acc", "acc_lo", "acc_hi", "o"),
                                              ("before", "sft_acc", "sft_acc_lo", "sft_acc_hi", "s")):
                d = sel[sel[col].notna()].copy()
                if d.empty:
                    continue
                d["_x"] = d["variant"].map(pos) + off + (-width / 2 if when == "before" else width / 2)
                d = d.sort_values("_x")
                color, ls = styles[(when, ci_)]
                y = 100 * d[col].to_numpy(dtype=float)
                err = _err(y, 100 * d[lo].to_numpy(dtype=float), 100 * d[hi].to_numpy(dtype=float)) \
                    if lo in d else None
                label = ("after RL: mean and 95% CI" if when == "after" else
                         "before RL (after SFT; cold start: the base model)") + suffix
                ax.errorbar(d["_x"], y, yerr=err, fmt=marker, color=color, capsize=3, markersize=6,
                            mfc=color if when == "after" else "white", label=label, zorder=3)
                ks = d[d["k"].notna()]
                if len(ks) > 1:       # the k points joined, the baselines not
                    ax.plot(ks["_x"], 100 * ks[col].astype(float), color=color, linestyle=ls, linewidth=1.2,
                            zorder=2)
            cold = sel[(sel["variant"] == COLD) & sel["acc"].notna()]
            if len(cold) and not cold_drawn and len(combos) == 1:
                c = cold.iloc[0]
                ax.axhline(100 * c["acc"], color=COLD_COLOR, linestyle=":", linewidth=1.3, zorder=1,
                           label="cold start after RL (reference)")
                if pd.notna(c.get("acc_lo")) and pd.notna(c.get("acc_hi")):
                    ax.axhspan(100 * c["acc_lo"], 100 * c["acc_hi"], color=COLD_COLOR, alpha=0.10, linewidth=0,
                               zorder=0)
                cold_drawn = True
            best = sel[sel["best"].astype(bool) & sel["acc"].notna()] if "best" in sel else sel.iloc[0:0]
            if len(best):
                bx = best["variant"].map(pos).to_numpy(dtype=float) + off + width / 2
                ax.plot(bx, 100 * best["acc"].to_numpy(dtype=float) + 0.0, linestyle="none", marker="*",
                        markersize=15, color=STAR_COLOR, zorder=5, gid=BEST_GID,
                        label="best k: paired 95% CI vs every other k excludes 0")
        sizes = t.set_index("variant")["sft_examples"] if "sft_examples" in t else pd.Series(dtype=float)
        ax.set_xticks([pos[v] for v in variants])
        ax.set_xticklabels([_tick(v, sizes.get(v)) for v in variants], fontsize=8)
        ax.set_xlim(min(pos.values()) - 0.6, max(pos.values()) + 0.6)
        _percent_ylim(ax, t[["acc", "acc_lo", "acc_hi", "sft_acc", "sft_acc_hi"]].to_numpy(dtype=float) * 100
                      if "sft_acc_hi" in t else t[["acc", "acc_lo", "acc_hi", "sft_acc"]].to_numpy(dtype=float) * 100)
        ptitle = task if proto is None else f"{task}: {PROTOCOL_NAMES.get(proto, proto)}"
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("SFT data: k dead ends per trace, or a baseline")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3, axis="y")
    _fig_legend(fig, fig.get_axes())
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- forest plot

FOREST_FAMILIES = [("cold_start", "vs cold start"), ("k0", "vs k=0"), ("before RL", "RL gain: after - before RL")]


def forest(diffs: pd.DataFrame, axes: Sequence[str] = (), protocol: str | None = None,
           role: str = "rl_eval", sizes: pd.DataFrame | None = None, title: str | None = None) -> Figure | None:
    """Paired differences (points, 95% CI) for one protocol: one row of panels per task (x
    axes setting), one column per comparison (vs cold start, vs k=0, after vs before RL).
    A filled marker: the CI excludes 0; hollow: it does not."""
    if diffs is None or diffs.empty:
        return None
    d = diffs[(diffs["role"] == role)]
    if protocol is not None:
        d = d[d["protocol"] == protocol]
    d = d[d["diff"].notna()]
    if d.empty:
        return None
    groups = [(t, c) for t in dict.fromkeys(d["task"]) for c in _combos(d[d.task == t], axes)]
    fams = [(v, name) for v, name in FOREST_FAMILIES if (d["versus"] == v).any()]
    n_rows = max(d[(d.task == t)]["variant"].nunique() for t, _ in groups)
    fig = new_figure(3.3 * len(fams) + 2.4, (0.28 * n_rows + 1.3) * len(groups) + 0.6)
    axs = _axes_list(fig, len(groups) * len(fams), rows_cols=(len(groups), len(fams)), share_y="row")
    for gi, (task, combo) in enumerate(groups):
        g = _select(d[d.task == task], combo)
        variants = sorted(dict.fromkeys(g["variant"].astype(str)), key=variant_sort_key)
        ypos = {v: -i for i, v in enumerate(variants)}
        sz = None
        if sizes is not None and len(sizes):
            sz = _select(sizes[sizes.task == task], combo).set_index("variant")["examples"]
        for fi, (versus, fname) in enumerate(fams):
            ax = axs[gi * len(fams) + fi]
            f = g[g["versus"] == versus]
            ax.axvline(0, color="#444444", linewidth=0.9, zorder=1)
            for _, r in f.iterrows():
                y = ypos[str(r["variant"])]
                sig = bool(r["significant"])
                ax.errorbar([100 * r["diff"]], [y], xerr=[[100 * (r["diff"] - r["lo"])], [100 * (r["hi"] - r["diff"])]],
                            fmt="o", color="#111111" if sig else "#8a8a8a", mfc="#111111" if sig else "white",
                            capsize=3, markersize=6, zorder=3,
                            label="95% CI excludes 0" if sig else "95% CI includes 0")
            if fi == 0:       # the row's panels share this y axis
                ax.set_yticks(list(ypos.values()))
                ax.set_yticklabels([variant_name(v) + ("" if sz is None or v not in sz.index or _k_of(v) is not None
                                                       else f" ({int(round(sz[v])):,} ex.)") for v in variants],
                                   fontsize=8)
                ax.set_ylim(min(ypos.values()) - 0.6, 0.6)
                ax.set_ylabel("SFT data")
            ax.set_xlabel("difference (points)")
            head = task + (f" ({_combo_label(combo)})" if combo else "")
            ax.set_title(f"{head}: {fname}", fontsize=9)
            ax.grid(alpha=0.3, axis="x")
    _fig_legend(fig, fig.get_axes(), where="below")
    what = {"rl_eval": "after RL", "sft_eval": "before RL"}.get(role, role)
    fig.suptitle(title or f"Paired differences, {what}, {PROTOCOL_NAMES.get(protocol, protocol or '')} "
                 "(same test items and seeds; 95% CI)", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- backtracks vs k

def backtracks_vs_k(table: pd.DataFrame, axes: Sequence[str] = ()) -> Figure | None:
    if table.empty:
        return None
    ks = table[table["k"].notna()]
    if "protocol" in ks and ks["protocol"].nunique() > 1:
        ks = ks[ks["protocol"] == ks["protocol"].iloc[0]]
    tasks = [t for t in dict.fromkeys(ks["task"])
             if ks.loc[ks.task == t, ["backtracks", "sft_backtracks"]].notna().any().any()]
    if not tasks:
        return None
    fig = new_figure(4.2 * min(len(tasks), 4) + 0.5, 3.6 * _grid(len(tasks))[0] + 0.6)
    for ax, task in zip(_axes_list(fig, len(tasks)), tasks):
        t = ks[ks.task == task]
        for ci_, combo in enumerate(_combos(t, axes)):
            sel = _select(t, combo).sort_values("k")
            suffix = f" ({_combo_label(combo)})" if axes else ""
            color = PALETTE[ci_ % len(PALETTE)]
            x = sel["k"].astype(float).to_numpy()
            if ci_ == 0:
                ax.plot(x, x, color="#999999", linestyle=":", marker=".", label="in the SFT traces (k)")
            s = sel[sel["sft_backtracks"].notna()]
            if len(s):
                ax.plot(s["k"].astype(float), s["sft_backtracks"].astype(float), marker="s", linestyle="--",
                        color=color, alpha=0.8, label=f"model after SFT{suffix}")
            r = sel[sel["backtracks"].notna()]
            if len(r):
                ax.plot(r["k"].astype(float), r["backtracks"].astype(float), marker="o", color=color,
                        label=f"model after RL{suffix}")
        ax.set_title(task)
        ax.set_xlabel("k (dead ends per SFT trace)")
        ax.set_ylabel("backtracks per test response")
        if len(t):
            ax.set_xticks(sorted(set(t["k"].astype(int))))
        ax.grid(alpha=0.3)
    _fig_legend(fig, fig.get_axes(), where="below")
    fig.suptitle("Does RL keep the backtracking that SFT taught?")
    return fig


# ---------------------------------------------------------------------------- training curves

def _smooth(y: np.ndarray, w: int) -> np.ndarray:
    if w <= 1 or len(y) < 3:
        return y
    s = pd.Series(y).rolling(w, min_periods=1, center=True).mean()
    return s.to_numpy()


def _window(n_steps: int) -> int:
    return max(1, n_steps // 40)


def rl_panels(steps: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(title, ylabel, key) of the RL panels that have data; validation accuracy is shown
    when logged, else the rollout accuracy."""
    rl = steps[steps["role"] == "rl"] if "role" in steps else steps.iloc[0:0]
    out = []
    have_val = False
    for title, ylabel, keys in RL_PANELS:
        key = next((k for k in keys if k in rl and rl[k].notna().any()), None)
        if key is None:
            continue
        if title == "validation accuracy":
            have_val = True
        if title == "rollout accuracy" and have_val:
            continue
        out.append((title, ylabel, key))
    return out


def _series_keys(df: pd.DataFrame, axes: Sequence[str]) -> list[tuple]:
    group = [*axes, "variant"]
    keys = {tuple(r) for r in df[group].drop_duplicates().itertuples(index=False)}
    return sorted(keys, key=lambda g: (variant_sort_key(g[-1]), tuple(str(x) for x in g[:-1])))


def _styles(keys: Sequence[tuple], variants: Sequence[Any] | None) -> dict[tuple, tuple[str, str]]:
    """Styles of series keyed (axes values..., variant). With `variants` (every variant of the
    sweep), a variant keeps its style in every figure, also where some variants are absent
    (cold start has no SFT loss)."""
    if variants is None:
        return series_styles(keys)
    order = sorted({str(v) for v in variants} | {str(k[-1]) for k in keys}, key=variant_sort_key)
    combos = sorted({tuple(k[:-1]) for k in keys}, key=lambda c: tuple(str(x) for x in c))
    canon = series_styles([(*c, v) for c in combos for v in order])
    return {k: canon[(*k[:-1], str(k[-1]))] for k in keys}


def _series_label(gkey: tuple, axes: Sequence[str], sizes: Mapping | None) -> str:
    variant = str(gkey[-1])
    ex = sizes.get(variant) if sizes is not None else None
    label = label_of(variant, ex)
    if axes:
        label += " (" + ", ".join(f"{a.split('.')[-1]}={v}" for a, v in zip(axes, gkey[:-1])) + ")"
    return label


def _ylim_for(ax, key: str, values: np.ndarray, scale: float) -> None:
    if scale == 100.0:
        _percent_ylim(ax, values * 100)
    elif key in ("reward_mean", "reward", "critic/score/mean"):     # rewards lie in [0, 1]
        top = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
        ax.set_ylim(-0.02, min(1.05, max(0.1, top * 1.08 + 0.02)))
    elif "backtrack" in key:
        ax.set_ylim(bottom=0.0)


def rl_curves(steps: pd.DataFrame, task: str, axes: Sequence[str] = (), smooth: bool = True,
              sizes: Mapping[str, float] | None = None, variants: Sequence[Any] | None = None) -> Figure | None:
    if steps.empty or "role" not in steps:
        return None
    df = steps[(steps["role"] == "rl") & (steps["task"] == task)]
    panels = rl_panels(df)
    if df.empty or not panels:
        return None
    fig = new_figure(4.6 * min(len(panels), 2) + 3.4, 3.3 * _grid(len(panels), 2)[0] + 0.6)
    group = [*axes, "variant"]
    keys_all = _series_keys(df, axes)
    styles = _styles(keys_all, variants)
    for ax, (ptitle, ylabel, key) in zip(_axes_list(fig, len(panels), max_cols=2), panels):
        scale = 100.0 if key in PERCENT_KEYS else 1.0
        sub = df[df[key].notna()]
        w_used = 1
        for gkey in [k for k in keys_all if k in set(_series_keys(sub, axes))]:
            g = sub
            for col, v in zip(group, gkey):
                g = g[g[col] == v]
            agg = g.groupby("step")[key].agg(["mean", "min", "max", "count"])
            x = agg.index.to_numpy(dtype=float)
            w = _window(len(x)) if smooth and not key.startswith("val") else 1
            w_used = max(w_used, w)
            color, ls = styles[gkey]
            mean = _smooth(agg["mean"].to_numpy(dtype=float), w) * scale
            marker = "o" if len(x) <= 30 or key.startswith("val") else None
            ax.plot(x, mean, color=color, linestyle=ls, label=_series_label(gkey, axes, sizes), marker=marker,
                    markersize=3)
            if agg["count"].max() > 1:
                ax.fill_between(x, _smooth(agg["min"].to_numpy(dtype=float), w) * scale,
                                _smooth(agg["max"].to_numpy(dtype=float), w) * scale, color=color, alpha=0.12,
                                linewidth=0)
        ax.set_title(ptitle + (f" (rolling mean, {w_used} steps)" if w_used > 1 else ""), fontsize=10)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _ylim_for(ax, key, sub[key].to_numpy(dtype=float), scale)
        ax.grid(alpha=0.3)
    _fig_legend(fig, fig.get_axes(), title="SFT data, then RL")
    n_seeds = int(df.groupby(group, observed=True)["seed"].nunique().max()) if "seed" in df else 1
    what = f"mean over {n_seeds} seeds; band = min..max over seeds" if n_seeds > 1 else "one seed"
    fig.suptitle(f"RL training: {task} ({what})")
    return fig


def rl_seed_curves(steps: pd.DataFrame, task: str, axes: Sequence[str] = (), smooth: bool = True,
                   sizes: Mapping[str, float] | None = None) -> Figure | None:
    """One panel per SFT data (x axes setting): each seed's curve of the first RL panel's
    metric (the reward), their mean and the min..max band. None with fewer than two seeds."""
    if steps.empty or "role" not in steps or "seed" not in steps:
        return None
    df = steps[(steps["role"] == "rl") & (steps["task"] == task)]
    panels = rl_panels(df)
    if df.empty or not panels or df.groupby([*axes, "variant"], observed=True)["seed"].nunique().max() < 2:
        return None
    ptitle, ylabel, key = panels[0]
    scale = 100.0 if key in PERCENT_KEYS else 1.0
    sub = df[df[key].notna()]
    keys = _series_keys(sub, axes)
    fig = new_figure(3.3 * min(len(keys), 4) + 2.6, 2.7 * _grid(len(keys))[0] + 0.7)
    group = [*axes, "variant"]
    axs = _axes_list(fig, len(keys), share_y=True)
    for ax, gkey in zip(axs, keys):
        g = sub
        for col, v in zip(group, gkey):
            g = g[g[col] == v]
        steps_all = np.sort(g["step"].unique())
        w = _window(len(steps_all)) if smooth else 1
        for i, (seed, gs) in enumerate(g.groupby("seed", observed=True)):
            gs = gs.sort_values("step")
            ax.plot(gs["step"].to_numpy(dtype=float), _smooth(gs[key].to_numpy(dtype=float), w) * scale,
                    color=SEED_COLOR, linewidth=0.8, alpha=0.9, label="one seed (each line)")
        agg = g.groupby("step")[key].agg(["mean", "min", "max"])
        x = agg.index.to_numpy(dtype=float)
        ax.fill_between(x, _smooth(agg["min"].to_numpy(dtype=float), w) * scale,
                        _smooth(agg["max"].to_numpy(dtype=float), w) * scale, color=SEED_COLOR, alpha=0.18,
                        linewidth=0, label="min..max over seeds")
        ax.plot(x, _smooth(agg["mean"].to_numpy(dtype=float), w) * scale, color=MEAN_COLOR, linewidth=2.0,
                label="mean over seeds")
        ax.set_title(_series_label(gkey, axes, sizes), fontsize=9)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _ylim_for(axs[0], key, sub[key].to_numpy(dtype=float), scale)
    _fig_legend(fig, fig.get_axes())
    w = _window(len(np.unique(sub["step"])))
    fig.suptitle(f"RL {ptitle} per seed: {task}" + (f" (rolling mean, {w} steps)" if smooth and w > 1 else ""))
    return fig


def sft_loss(steps: pd.DataFrame, axes: Sequence[str] = (), smooth: bool = True,
             sizes: Mapping[str, float] | None = None, variants: Sequence[Any] | None = None) -> Figure | None:
    if steps.empty or "role" not in steps:
        return None
    df = steps[steps["role"] == "sft"]
    key = next((k for k in SFT_LOSS_KEYS if k in df and df[k].notna().any()), None)
    if df.empty or key is None:
        return None
    df = df[df[key].notna()]
    tasks = sorted(dict.fromkeys(df["task"].astype(str)))
    fig = new_figure(4.2 * min(len(tasks), 4) + 3.2, 3.4 * _grid(len(tasks))[0] + 0.4)
    styles = _styles(_series_keys(df, axes), variants)
    group = [*axes, "variant"]
    for ax, task in zip(_axes_list(fig, len(tasks)), tasks):
        t = df[df["task"] == task]
        for gkey in _series_keys(t, axes):
            g = t
            for col, v in zip(group, gkey):
                g = g[g[col] == v]
            agg = g.groupby("step")[key].agg(["mean", "min", "max", "count"])
            x = agg.index.to_numpy(dtype=float)
            w = _window(len(x)) if smooth else 1
            color, ls = styles[gkey]
            ax.plot(x, _smooth(agg["mean"].to_numpy(dtype=float), w), color=color, linestyle=ls,
                    label=_series_label(gkey, axes, sizes))
            if agg["count"].max() > 1:
                ax.fill_between(x, _smooth(agg["min"].to_numpy(dtype=float), w),
                                _smooth(agg["max"].to_numpy(dtype=float), w), color=color, alpha=0.12, linewidth=0)
        ax.set_title(task)
        ax.set_xlabel("SFT step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss (per token)")
        if (t[key] > 0).all() and t[key].max() / max(t[key].min(), 1e-12) > 20:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    _fig_legend(fig, fig.get_axes(), title="SFT data")
    fig.suptitle("SFT loss (mean over seeds; band = min..max)")
    return fig


def compare_accuracy(tables: Sequence[pd.DataFrame], labels: Sequence[str]) -> Figure | None:
    """Accuracy after RL per SFT data of several sweeps in one panel per task (each sweep one
    colour, side by side at each slot)."""
    tasks = list(dict.fromkeys(t for tab in tables for t in tab["task"]))
    tasks = [t for t in tasks if any(tab.loc[tab.task == t, "acc"].notna().any() for tab in tables)]
    if not tasks:
        return None
    fig = new_figure(4.6 * min(len(tasks), 3) + 2.8, 3.9 * _grid(len(tasks), 3)[0])
    styles = series_styles(list(labels))
    for ax, task in zip(_axes_list(fig, len(tasks), max_cols=3), tasks):
        allv = pd.concat([tab[tab.task == task][["variant", "k"]] for tab in tables])
        variants, pos = _slots(allv)
        for i, (tab, lab) in enumerate(zip(tables, labels)):
            t = tab[(tab.task == task) & tab["acc"].notna()]
            t = t.groupby("variant", as_index=False)[["acc", "acc_lo", "acc_hi"]].mean()
            if t.empty:
                continue
            x = t["variant"].map(pos).to_numpy(dtype=float) + (i - (len(tables) - 1) / 2) * 0.12
            y = 100 * t["acc"].to_numpy(dtype=float)
            color, _ = styles[lab]
            ax.errorbar(x, y, yerr=_err(y, 100 * t["acc_lo"].to_numpy(dtype=float),
                                        100 * t["acc_hi"].to_numpy(dtype=float)),
                        fmt="o", capsize=3, color=color, label=f"{lab}: after RL, 95% CI")
        ax.set_xticks([pos[v] for v in variants])
        ax.set_xticklabels([_tick(v, None) for v in variants], fontsize=8)
        ax.set_title(task)
        ax.set_xlabel("SFT data")
        ax.set_ylabel("test accuracy after RL (%)")
        ax.grid(alpha=0.3, axis="y")
    _fig_legend(fig, fig.get_axes(), title="sweep")
    return fig


# ---------------------------------------------------------------------------- output

def save(fig: Figure, stem: str | Path) -> list[Path]:
    """stem.png and stem.svg. The SVG bytes are kept on the figure (`fig._r360_svg`) so the
    HTML report inlines them without drawing the figure again."""
    from reasoning360 import atomic

    stem = Path(stem)
    out = []
    for ext in ("png", "svg"):
        data = to_bytes(fig, ext)
        if ext == "svg":
            fig._r360_svg = data
        path = stem.with_suffix(f".{ext}")
        atomic.write_bytes(path, data)
        out.append(path)
    return out


def to_bytes(fig: Figure, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110 if fmt == "png" else None)
    return buf.getvalue()


def check_figure(fig: Figure) -> list[str]:
    """What a reader would miss or be misled by. Empty list = fine:
    an axes without x or y label or without data; no legend; a legend that reaches outside
    the figure, or is larger than all the plotting area together; two legend entries drawn
    alike (same colour and line style, or for marker-only entries same colour and marker)."""
    problems = []
    axs = [ax for ax in fig.get_axes() if ax.get_visible()]
    if not axs:
        return ["figure has no axes"]
    legends = list(fig.legends) + [ax.get_legend() for ax in axs if ax.get_legend() is not None]
    fig.draw_without_rendering()          # lay out, so ticks and boxes below are final
    for i, ax in enumerate(axs):
        name = ax.get_title() or f"axes {i}"
        if not ax.get_xlabel().strip():
            problems.append(f"{name}: no x label")
        if not ax.get_ylabel().strip() and not _shares_labelled_y(ax):
            problems.append(f"{name}: no y label")
        if not _has_data(ax):
            problems.append(f"{name}: no data")
        if ax.get_legend() is not None and not ax.get_legend().get_texts():
            problems.append(f"{name}: empty legend")
    if not legends:
        problems.append("no legend")
        return problems
    renderer = fig.canvas.get_renderer()
    fb = fig.bbox
    plot_area = sum(ax.get_window_extent(renderer).width * ax.get_window_extent(renderer).height for ax in axs)
    for leg in legends:
        lb = leg.get_window_extent(renderer)
        if lb.x0 < fb.x0 - 1 or lb.y0 < fb.y0 - 1 or lb.x1 > fb.x1 + 1 or lb.y1 > fb.y1 + 1:
            problems.append(f"legend reaches outside the figure ({lb.x0:.0f},{lb.y0:.0f})-({lb.x1:.0f},"
                            f"{lb.y1:.0f}) vs {fb.width:.0f}x{fb.height:.0f}")
        if lb.width * lb.height > plot_area:
            problems.append("legend larger than the plotting area")
    seen: dict[tuple, str] = {}
    for label, key in legend_entries(fig):
        if key in seen and seen[key] != label:
            problems.append(f"legend entries drawn alike: {seen[key]!r} and {label!r} ({key})")
        seen.setdefault(key, label)
    return problems


def _shares_labelled_y(ax) -> bool:
    """True when ax shows no y tick labels of its own and shares its y axis with an axes
    that has a y label (a row of panels labelled once, on the left)."""
    if any(t.label1.get_visible() and t.label1.get_text() for t in ax.yaxis.get_major_ticks()):
        return False
    return any(o is not ax and o.get_ylabel().strip() for o in ax.get_shared_y_axes().get_siblings(ax))


def legend_entries(fig: Figure) -> list[tuple[str, tuple]]:
    """(label, how it is drawn) of every legend entry of the figure: (colour, line style) for
    a line, (colour, 'marker', marker, filled) for markers alone (an error bar's marker
    included), (colour, 'fill') for a band. Read from the artists the entries stand for."""
    from matplotlib import colors as mcolors
    from matplotlib.container import ErrorbarContainer
    from matplotlib.lines import Line2D

    legends = list(fig.legends) + [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    shown = {t.get_text() for leg in legends for t in leg.get_texts()}
    out, done = [], set()
    for ax in fig.get_axes():
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in shown or label in done:
                continue
            done.add(label)
            if isinstance(h, ErrorbarContainer):
                h = h.lines[0]
            if isinstance(h, Line2D):
                color = mcolors.to_hex(h.get_color())
                ls = h.get_linestyle()
                if ls in ("None", "none", "", " "):
                    filled = mcolors.to_hex(h.get_markerfacecolor()) != "#ffffff"
                    out.append((label, (color, "marker", str(h.get_marker()), filled)))
                else:
                    out.append((label, (color, ls)))
            else:
                fc = np.asarray(h.get_facecolor(), dtype=float) if hasattr(h, "get_facecolor") else np.zeros(0)
                fc = fc[0] if fc.ndim == 2 and len(fc) else fc
                out.append((label, (mcolors.to_hex(fc) if fc.ndim == 1 and len(fc) in (3, 4) else "?", "fill")))
    return out


def _has_data(ax) -> bool:
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        if len(x) and np.isfinite(x).any() and np.isfinite(y).any():
            return True
    for coll in ax.collections:
        offs = coll.get_offsets() if hasattr(coll, "get_offsets") else []
        paths = coll.get_paths() if hasattr(coll, "get_paths") else []
        if len(offs) or len(paths):
            return True
    if ax.patches or ax.images:
        return True
    return False
