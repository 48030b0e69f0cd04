"""Figures of a sweep, as matplotlib Figure objects drawn on the Agg canvas (no pyplot, no
global backend: safe in scripts, tests, threads and notebooks alike).

    accuracy_vs_k(table)            one panel per task: final accuracy (CI bars) vs k,
                                    accuracy before RL, cold start as a band; best k starred
    backtracks_vs_k(table)          backtracks per response: in the SFT traces (= k), after
                                    SFT, after RL -- does RL keep the backtracking SFT taught?
    rl_curves(steps, task)          reward, validation accuracy, response length and backtracks
                                    per response over RL steps, one line per k (mean over seeds,
                                    band = min..max over seeds)
    sft_loss(steps)                 SFT loss over steps, one panel per task, one line per k

Every function returns None when there is nothing to draw (no empty figures, no empty
panels). `check_figure(fig)` lists what a reader would miss: unlabelled axes, no legend,
a panel without data.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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
BASELINE_COLORS = ["#444444", "#8c564b", "#e377c2", "#7f7f7f"]
LINESTYLES = ["-", "--", ":", "-."]


def new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def variant_colors(variants: Sequence[str]) -> dict[str, Any]:
    """k variants on a sequential colormap (ordered by k), baselines in greys/browns."""
    from matplotlib import colormaps

    ks = sorted({v for v in variants if _k_of(v) is not None}, key=_k_of)
    cmap = colormaps["viridis"]
    out = {v: cmap(0.1 + 0.75 * (i / max(1, len(ks) - 1))) for i, v in enumerate(ks)}
    for i, v in enumerate(sorted({v for v in variants if _k_of(v) is None})):
        out[v] = BASELINE_COLORS[i % len(BASELINE_COLORS)]
    return out


def _k_of(variant: str) -> int | None:
    v = str(variant)
    return int(v[1:]) if v.startswith("k") and v[1:].isdigit() else None


def variant_sort_key(v: str):
    k = _k_of(v)
    return (0, k, "") if k is not None else (1, 0, str(v))


def label_of(variant: str) -> str:
    k = _k_of(variant)
    return f"k={k}" if k is not None else str(variant).replace("_", " ")


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def _axes_list(fig: Figure, n: int, max_cols: int = 4, share_y: bool = False):
    rows, cols = _grid(n, max_cols)
    axs = fig.subplots(rows, cols, squeeze=False, sharey=share_y)
    flat = list(axs.flat)
    for ax in flat[n:]:
        ax.remove()              # no empty panels
    return flat[:n]


def _fig_legend(fig: Figure, axs, title: str | None = None) -> None:
    """One legend for the figure (below the panels), with every label of every panel once."""
    handles, labels = {}, []
    for ax in axs:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles and not lab.startswith("_"):
                handles[lab] = h
                labels.append(lab)
    if labels:
        width_pt = fig.get_figwidth() * 72
        per_col = max(len(lab) for lab in labels) * 4.7 + 40       # fontsize 8: ~4.7 pt a character
        ncol = int(max(1, min(len(labels), 6, width_pt // per_col)))
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncol=ncol, fontsize=8, title=title, title_fontsize=8, frameon=False)


def _combo_label(row: Any, axes: Sequence[str]) -> str:
    return ", ".join(f"{a.split('.')[-1]}={row[a]}" for a in axes)


# ---------------------------------------------------------------------------- accuracy vs k

def accuracy_vs_k(table: pd.DataFrame, axes: Sequence[str] = (), title: str | None = None) -> Figure | None:
    if table.empty or not table["acc"].notna().any() and not table["sft_acc"].notna().any():
        return None
    tasks = [t for t in dict.fromkeys(table["task"])
             if table.loc[table.task == t, ["acc", "sft_acc"]].notna().any().any()]
    if not tasks:
        return None
    fig = new_figure(4.2 * min(len(tasks), 4) + 0.5, 3.6 * _grid(len(tasks))[0])
    combos = _combos(table, axes)
    styles = ["-", "--", ":", "-."]
    for ax, task in zip(_axes_list(fig, len(tasks)), tasks):
        t = table[table.task == task]
        ks = t[t["k"].notna()]
        xs_all = ks["k"].astype(float).to_numpy()
        x_lo, x_hi = (xs_all.min() - 0.3, xs_all.max() + 0.3) if len(xs_all) else (-0.5, 0.5)
        for ci_, combo in enumerate(combos):
            sel = ks
            for a, v in combo.items():
                sel = sel[sel[a] == v]
            sel = sel.sort_values("k")
            suffix = f" ({_combo_label(combo, axes)})" if axes else ""
            color = f"C{ci_}"
            fin = sel[sel["acc"].notna()]
            if len(fin):
                x = fin["k"].astype(float).to_numpy()
                y = 100 * fin["acc"].to_numpy(dtype=float)
                err = np.vstack([y - 100 * fin["acc_lo"].to_numpy(dtype=float),
                                 100 * fin["acc_hi"].to_numpy(dtype=float) - y])
                err = np.nan_to_num(np.clip(err, 0, None))
                ax.errorbar(x, y, yerr=err, marker="o", capsize=4, color=color, linestyle=styles[0],
                            label=f"after RL (95% CI){suffix}")
                best = fin[fin["best"]]
                if len(best):
                    ax.plot(best["k"].astype(float), 100 * best["acc"].astype(float), linestyle="none",
                            marker="*", markersize=16, color="#d62728", zorder=5,
                            label="best k" if ci_ == 0 else None)
            pre = sel[sel["sft_acc"].notna()]
            if len(pre):
                ax.plot(pre["k"].astype(float), 100 * pre["sft_acc"].astype(float), marker="s",
                        linestyle="--", color=color, alpha=0.6, label=f"after SFT, before RL{suffix}")
            bases = t[t["k"].isna() & t["acc"].notna()]
            for a, v in combo.items():
                bases = bases[bases[a] == v]
            for bi, (_, b) in enumerate(bases.iterrows()):
                bc = f"C{ci_}" if axes else BASELINE_COLORS[bi % len(BASELINE_COLORS)]
                ax.axhline(100 * b["acc"], color=bc, linestyle=":", linewidth=1.5,
                           label=f"{label_of(b['variant'])} (RL only){suffix}")
                if pd.notna(b["acc_lo"]) and pd.notna(b["acc_hi"]):
                    ax.axhspan(100 * b["acc_lo"], 100 * b["acc_hi"], color=bc, alpha=0.12, linewidth=0)
        ax.set_xlim(x_lo, x_hi)
        if len(xs_all):
            ax.set_xticks(sorted(set(xs_all.astype(int))))
        _percent_ylim(ax, t[["acc", "acc_lo", "acc_hi", "sft_acc"]].to_numpy(dtype=float) * 100)
        ax.set_title(task)
        ax.set_xlabel("k (dead ends per SFT trace)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    _fig_legend(fig, fig.get_axes())
    if title:
        fig.suptitle(title)
    return fig


def _percent_ylim(ax, values) -> None:
    """Percent axes start at 0 (a little below, so points at 0 show) and reach at least 10%."""
    v = np.asarray(values, dtype=float)
    top = np.nanmax(v) if np.isfinite(v).any() else 0.0
    ax.set_ylim(-0.03 * max(top, 10.0), min(102.0, max(10.0, top * 1.08 + 2)))


def _combos(table: pd.DataFrame, axes: Sequence[str]) -> list[dict]:
    if not axes:
        return [{}]
    uniq = table[list(axes)].drop_duplicates()
    return [dict(zip(axes, r)) for r in uniq.itertuples(index=False)]


# ---------------------------------------------------------------------------- backtracks vs k

def backtracks_vs_k(table: pd.DataFrame, axes: Sequence[str] = ()) -> Figure | None:
    if table.empty:
        return None
    ks = table[table["k"].notna()]
    tasks = [t for t in dict.fromkeys(ks["task"])
             if ks.loc[ks.task == t, ["backtracks", "sft_backtracks"]].notna().any().any()]
    if not tasks:
        return None
    fig = new_figure(4.2 * min(len(tasks), 4) + 0.5, 3.6 * _grid(len(tasks))[0])
    for ax, task in zip(_axes_list(fig, len(tasks)), tasks):
        t = ks[ks.task == task]
        for ci_, combo in enumerate(_combos(t, axes)):
            sel = t
            for a, v in combo.items():
                sel = sel[sel[a] == v]
            sel = sel.sort_values("k")
            suffix = f" ({_combo_label(combo, axes)})" if axes else ""
            x = sel["k"].astype(float).to_numpy()
            if ci_ == 0:
                ax.plot(x, x, color="#999999", linestyle=":", marker=".", label="in the SFT traces (k)")
            s = sel[sel["sft_backtracks"].notna()]
            if len(s):
                ax.plot(s["k"].astype(float), s["sft_backtracks"].astype(float), marker="s", linestyle="--",
                        color=f"C{ci_}", alpha=0.7, label=f"model after SFT{suffix}")
            r = sel[sel["backtracks"].notna()]
            if len(r):
                ax.plot(r["k"].astype(float), r["backtracks"].astype(float), marker="o", color=f"C{ci_}",
                        label=f"model after RL{suffix}")
        ax.set_title(task)
        ax.set_xlabel("k (dead ends per SFT trace)")
        ax.set_ylabel("backtracks per test response")
        if len(t):
            ax.set_xticks(sorted(set(t["k"].astype(int))))
        ax.grid(alpha=0.3)
    _fig_legend(fig, fig.get_axes())
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


def rl_curves(steps: pd.DataFrame, task: str, axes: Sequence[str] = (), smooth: bool = True) -> Figure | None:
    if steps.empty or "role" not in steps:
        return None
    df = steps[(steps["role"] == "rl") & (steps["task"] == task)]
    panels = rl_panels(df)
    if df.empty or not panels:
        return None
    fig = new_figure(4.6 * min(len(panels), 2) + 0.5, 3.3 * _grid(len(panels), 2)[0] + 0.6)
    group = [*axes, "variant"]
    colors = variant_colors(list(df["variant"].astype(str).unique()))
    combos = sorted({tuple(r) for r in df[list(axes)].drop_duplicates().itertuples(index=False)}, key=str) \
        if axes else [()]
    for ax, (ptitle, ylabel, key) in zip(_axes_list(fig, len(panels), max_cols=2), panels):
        scale = 100.0 if key in PERCENT_KEYS else 1.0
        sub = df[df[key].notna()]
        keys = sorted((tuple(r) for r in sub[group].drop_duplicates().itertuples(index=False)),
                      key=lambda g: variant_sort_key(g[-1]))
        for gi, gkey_t in enumerate(keys):
            g = sub
            for col, v in zip(group, gkey_t):
                g = g[g[col] == v]
            agg = g.groupby("step")[key].agg(["mean", "min", "max", "count"])
            x = agg.index.to_numpy(dtype=float)
            w = _window(len(x)) if smooth and key not in ("val_accuracy", "val/accuracy", "val_acc") else 1
            variant = str(gkey_t[-1])
            label = label_of(variant) + ("" if not axes else " (" + ", ".join(
                f"{a.split('.')[-1]}={v}" for a, v in zip(axes, gkey_t[:-1])) + ")")
            color = colors.get(variant)
            style = LINESTYLES[combos.index(gkey_t[:-1]) % len(LINESTYLES)] if axes else "-"
            mean = _smooth(agg["mean"].to_numpy(dtype=float), w) * scale
            marker = "o" if len(x) <= 30 or key.startswith("val") else None
            ax.plot(x, mean, color=color, linestyle=style, label=label, marker=marker, markersize=3)
            if agg["count"].max() > 1:
                ax.fill_between(x, _smooth(agg["min"].to_numpy(dtype=float), w) * scale,
                                _smooth(agg["max"].to_numpy(dtype=float), w) * scale, color=color, alpha=0.15,
                                linewidth=0)
        ax.set_title(ptitle + (f" (rolling mean, {_window(len(x))} steps)" if smooth and _window(len(x)) > 1
                               and not key.startswith("val") else ""), fontsize=10)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if scale == 100.0:
            _percent_ylim(ax, sub[key].to_numpy(dtype=float) * 100)
        elif key in ("reward_mean", "reward", "critic/score/mean"):     # rewards lie in [0, 1]
            top = float(np.nanmax(sub[key])) if sub[key].notna().any() else 0.0
            ax.set_ylim(-0.02, min(1.05, max(0.1, top * 1.08 + 0.02)))
        elif "backtrack" in key:
            ax.set_ylim(bottom=0.0)
        ax.grid(alpha=0.3)
    _fig_legend(fig, fig.get_axes(), title="SFT data")
    fig.suptitle(f"RL training: {task} (mean over seeds; band = min..max)")
    return fig


def sft_loss(steps: pd.DataFrame, axes: Sequence[str] = (), smooth: bool = True) -> Figure | None:
    if steps.empty or "role" not in steps:
        return None
    df = steps[steps["role"] == "sft"]
    key = next((k for k in SFT_LOSS_KEYS if k in df and df[k].notna().any()), None)
    if df.empty or key is None:
        return None
    df = df[df[key].notna()]
    tasks = sorted(dict.fromkeys(df["task"].astype(str)))
    fig = new_figure(4.2 * min(len(tasks), 4) + 0.5, 3.4 * _grid(len(tasks))[0])
    for ax, task in zip(_axes_list(fig, len(tasks)), tasks):
        t = df[df["task"] == task]
        colors = variant_colors(list(t["variant"].astype(str).unique()))
        for variant in sorted(t["variant"].astype(str).unique(), key=variant_sort_key):
            g = t[t["variant"] == variant]
            agg = g.groupby("step")[key].agg(["mean", "min", "max", "count"])
            x = agg.index.to_numpy(dtype=float)
            w = _window(len(x)) if smooth else 1
            ax.plot(x, _smooth(agg["mean"].to_numpy(dtype=float), w), color=colors[variant],
                    label=label_of(variant))
            if agg["count"].max() > 1:
                ax.fill_between(x, _smooth(agg["min"].to_numpy(dtype=float), w),
                                _smooth(agg["max"].to_numpy(dtype=float), w), color=colors[variant],
                                alpha=0.15, linewidth=0)
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
    """Accuracy vs k of several sweeps in one panel per task."""
    tasks = list(dict.fromkeys(t for tab in tables for t in tab["task"]))
    tasks = [t for t in tasks if any(tab.loc[(tab.task == t) & tab["k"].notna(), "acc"].notna().any()
                                     for tab in tables)]
    if not tasks:
        return None
    fig = new_figure(4.2 * min(len(tasks), 4) + 0.5, 3.6 * _grid(len(tasks))[0])
    for ax, task in zip(_axes_list(fig, len(tasks)), tasks):
        for i, (tab, lab) in enumerate(zip(tables, labels)):
            t = tab[(tab.task == task) & tab["k"].notna() & tab["acc"].notna()]
            t = t.groupby("k", as_index=False)[["acc", "acc_lo", "acc_hi"]].mean().sort_values("k")
            if t.empty:
                continue
            x = t["k"].astype(float).to_numpy() + (i - (len(tables) - 1) / 2) * 0.06
            y = 100 * t["acc"].to_numpy(dtype=float)
            err = np.nan_to_num(np.clip(np.vstack([y - 100 * t["acc_lo"].to_numpy(dtype=float),
                                                   100 * t["acc_hi"].to_numpy(dtype=float) - y]), 0, None))
            ax.errorbar(x, y, yerr=err, marker="o", capsize=4, color=f"C{i}", label=lab)
            for _, b in tab[(tab.task == task) & tab["k"].isna() & tab["acc"].notna()].iterrows():
                ax.axhline(100 * b["acc"], color=f"C{i}", linestyle=":", linewidth=1.3,
                           label=f"{lab}: {label_of(b['variant'])} (RL only)")
        ks = sorted({int(k) for tab in tables for k in tab.loc[(tab.task == task) & tab["k"].notna(), "k"]})
        ax.set_xticks(ks)
        ax.set_title(task)
        ax.set_xlabel("k (dead ends per SFT trace)")
        ax.set_ylabel("test accuracy after RL (%)")
        ax.grid(alpha=0.3)
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
    """What a reader would miss: an axes without x or y label, without data, or a figure
    without any legend. Empty list = fine."""
    problems = []
    axs = [ax for ax in fig.get_axes() if ax.get_visible()]
    if not axs:
        return ["figure has no axes"]
    has_fig_legend = bool(fig.legends)
    for i, ax in enumerate(axs):
        name = ax.get_title() or f"axes {i}"
        if not ax.get_xlabel().strip():
            problems.append(f"{name}: no x label")
        if not ax.get_ylabel().strip():
            problems.append(f"{name}: no y label")
        if not _has_data(ax):
            problems.append(f"{name}: no data")
        if ax.get_legend() is None and not has_fig_legend:
            problems.append(f"{name}: no legend")
        elif ax.get_legend() is not None and not ax.get_legend().get_texts():
            problems.append(f"{name}: empty legend")
    return problems


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
