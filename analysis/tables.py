"""Tables as text: markdown, LaTeX, CSV, HTML and rich, from the frames of `aggregate`.

A table is first turned into a `Display` (headers, rows of cell strings, which cells are
bold, which rows are notes), then rendered. Accuracies are shown in percent with their 95%
CI in brackets; a missing value is "-", never 0.
"""

from __future__ import annotations

import html as _html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

DASH = "-"
BEST = "★"          # rendered as $^\star$ in LaTeX


@dataclass
class Display:
    title: str
    headers: list[str]
    rows: list[list[str]]
    bold: list[list[bool]] = field(default_factory=list)
    align: list[str] = field(default_factory=list)     # "l" or "r" per column
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.bold:
            self.bold = [[False] * len(self.headers) for _ in self.rows]
        if not self.align:
            self.align = ["l"] * len(self.headers)


def pct(x: Any, digits: int = 1) -> str:
    return DASH if _nan(x) else f"{100 * float(x):.{digits}f}"


def num(x: Any, digits: int = 2) -> str:
    return DASH if _nan(x) else f"{float(x):.{digits}f}"


def signed_pct(x: Any, digits: int = 1) -> str:
    return DASH if _nan(x) else f"{100 * float(x):+.{digits}f}"


def ci(mean: Any, lo: Any, hi: Any, digits: int = 1) -> str:
    if _nan(mean):
        return DASH
    if _nan(lo) or _nan(hi):
        return pct(mean, digits)
    return f"{pct(mean, digits)} [{pct(lo, digits)}, {pct(hi, digits)}]"


def _nan(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def variant_label(row: Any) -> str:
    from .study import variant_name

    k = row["k"]
    return variant_name(row["variant"]) if _nan(k) else f"k={int(k)}"


# ---------------------------------------------------------------------------- displays

AFTER = "after RL [95% CI]"
SIZE_MARK = "†"


def diff_ci(d: Any, lo: Any, hi: Any, digits: int = 1) -> str:
    """A paired difference in points with its CI: +4.1 [+1.9, +6.3]."""
    if _nan(d):
        return DASH
    if _nan(lo) or _nan(hi):
        return signed_pct(d, digits)
    return f"{signed_pct(d, digits)} [{signed_pct(lo, digits)}, {signed_pct(hi, digits)}]"


def _significant(lo: Any, hi: Any) -> bool:
    return not _nan(lo) and not _nan(hi) and (float(lo) > 0 or float(hi) < 0)


def sft_set(r: Any) -> str:
    ex = r.get("sft_examples") if hasattr(r, "get") else None
    if r["variant"] == "cold_start":
        return "none (base model)"
    if ex is None or _nan(ex):
        return DASH
    return f"{int(round(float(ex))):,}" + (f" {SIZE_MARK}" if bool(r.get("size_flag", False)) else "")


def _protocol_title(df: pd.DataFrame) -> str:
    from .study import PROTOCOL_NAMES

    if "protocol" not in df or df.empty:
        return ""
    p = str(df["protocol"].iloc[0])
    return PROTOCOL_NAMES.get(p, p)


def main_display(df: pd.DataFrame, axes: Sequence[str] = (), title: str = "Final accuracy after RL") -> Display:
    """The main table for one protocol (aggregate.main_table / Study.table): per task and SFT
    data, the SFT set size, seeds, accuracy before and after RL with CIs, the RL gain, and the
    paired differences after RL from cold start and from k=0."""
    headers = ["task", *[a.split(".")[-1] for a in axes], "SFT data", "SFT set", "seeds", "before RL",
               AFTER, "RL gain", "Δ cold start", "Δ k=0", "backtracks SFT→RL", "format"]
    rows, bold = [], []
    has = lambda c: c in df.columns          # noqa: E731  (older frames lack the paired columns)
    for _, r in df.iterrows():
        d_cold = diff_ci(r["d_cold"], r["d_cold_lo"], r["d_cold_hi"]) if has("d_cold") else signed_pct(r["gain"])
        cells = [str(r["task"]), *[str(r[a]) for a in axes], variant_label(r), sft_set(r),
                 f"{int(r['seeds'])}/{int(r['seeds_planned'])}",
                 ci(r["sft_acc"], r.get("sft_acc_lo"), r.get("sft_acc_hi")),
                 ci(r["acc"], r["acc_lo"], r["acc_hi"]) + (f" {BEST}" if r["best"] else ""),
                 diff_ci(r["rl_gain"], r["rl_gain_lo"], r["rl_gain_hi"]) if has("rl_gain") else DASH,
                 d_cold if r["variant"] != "cold_start" else DASH,
                 diff_ci(r["d_k0"], r["d_k0_lo"], r["d_k0_hi"]) if has("d_k0") and r["variant"] != "k0" else DASH,
                 f"{num(r['sft_backtracks'])} → {num(r['backtracks'])}", pct(r["format_rate"])]
        b = [False] * len(cells)
        if r["best"]:
            b[headers.index(AFTER)] = True
        for h, lo, hi in (("RL gain", "rl_gain_lo", "rl_gain_hi"), ("Δ cold start", "d_cold_lo", "d_cold_hi"),
                          ("Δ k=0", "d_k0_lo", "d_k0_hi")):
            if has(lo) and _significant(r[lo], r[hi]) and cells[headers.index(h)] != DASH:
                b[headers.index(h)] = True
        rows.append(cells)
        bold.append(b)
    proto = _protocol_title(df)
    notes = [("Protocol: " + proto + ". " if proto else "")
             + "Test accuracy in %: mean over seeds and test items, 95% CI from a two-level bootstrap over "
             "seeds and items. RL gain (after - before RL of the same runs), Δ cold start and Δ k=0 (after "
             "RL): differences in points, paired on the same test items and seeds, with 95% CI; bold when the "
             f"CI excludes 0. {BEST} the declared best k: its paired CI against every other k excludes 0 (no "
             f"star: no k is better than the others). SFT set: examples in the SFT data; {SIZE_MARK} more than "
             "2x from the k sets' size. Backtracks per response after SFT → after RL. '-' = not available "
             "(missing, never 0)."]
    for _, r in df.iterrows():
        if r["missing"]:
            notes.append(f"missing in {r['task']} {variant_label(r)}: {r['missing']}")
    return Display(title, headers, rows, bold, ["l"] * (len(axes) + 3) + ["r"] * 8, notes)


def before_display(df: pd.DataFrame, axes: Sequence[str] = (),
                   title: str = "Accuracy after SFT, before RL") -> Display:
    """Before RL (after SFT; cold start: the base model): accuracy and its paired differences
    from cold start and from k=0, for one protocol."""
    headers = ["task", *[a.split(".")[-1] for a in axes], "SFT data", "SFT set", "seeds", "before RL [95% CI]",
               "Δ cold start", "Δ k=0"]
    rows, bold = [], []
    for _, r in df.iterrows():
        cells = [str(r["task"]), *[str(r[a]) for a in axes], variant_label(r), sft_set(r),
                 f"{int(r['seeds'])}/{int(r['seeds_planned'])}",
                 ci(r["sft_acc"], r["sft_acc_lo"], r["sft_acc_hi"]),
                 diff_ci(r["sft_d_cold"], r["sft_d_cold_lo"], r["sft_d_cold_hi"]) if r["variant"] != "cold_start"
                 else DASH,
                 diff_ci(r["sft_d_k0"], r["sft_d_k0_lo"], r["sft_d_k0_hi"]) if r["variant"] != "k0" else DASH]
        b = [False] * len(cells)
        for h, lo, hi in (("Δ cold start", "sft_d_cold_lo", "sft_d_cold_hi"), ("Δ k=0", "sft_d_k0_lo", "sft_d_k0_hi")):
            if _significant(r[lo], r[hi]) and cells[headers.index(h)] != DASH:
                b[headers.index(h)] = True
        rows.append(cells)
        bold.append(b)
    proto = _protocol_title(df)
    notes = [("Protocol: " + proto + ". " if proto else "") + "Accuracy in % with 95% CI; Δ in points, "
             "paired on test items and seeds, 95% CI, bold when it excludes 0. Cold start's row is the base model."]
    return Display(title, headers, rows, bold, ["l"] * (len(axes) + 3) + ["r"] * 4, notes)


def statements_markdown(statements: Sequence[str], notes: Sequence[str] = ()) -> str:
    lines = [f"- {s}" for s in statements]
    if notes:
        lines += [""] + [f"_{n}_  " for n in notes]
    return "\n".join(lines) + "\n"


def difficulty_display(df: pd.DataFrame, axes: Sequence[str] = (),
                       title: str = "Accuracy after RL by difficulty (%)") -> list[Display]:
    """One display per (task, difficulty column): rows = variants, columns = levels (like the
    Logic-RL table of knights-and-knaves accuracy by number of people)."""
    out = []
    if df.empty:
        return out
    for (task, dcol), g in df.groupby(["task", "difficulty"], sort=False):
        levels = sorted(g["level"].dropna().unique(), key=_level_key)
        name = dcol.split(".", 1)[-1] if "." in dcol else dcol
        headers = [*[a.split(".")[-1] for a in axes], "SFT data", *[f"{name}={lv}" for lv in levels]]
        rows = []
        for key, v in g.groupby([*axes, "variant"], sort=False, dropna=False):
            first = v.iloc[0]
            by_level = {lv: r for lv, r in zip(v["level"], v.itertuples())}
            cells = [*[str(first[a]) for a in axes], variant_label(first)]
            for lv in levels:
                r = by_level.get(lv)
                cells.append(DASH if r is None else ci(r.acc, r.acc_lo, r.acc_hi, 0))
            rows.append(cells)
        out.append(Display(f"{title}: {task}, by {name}", headers, rows,
                           align=["l"] * (len(axes) + 1) + ["r"] * len(levels),
                           notes=["mean [95% bootstrap CI] over seeds and items"]))
    return out


def _level_key(v: Any):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def compare_display(df: pd.DataFrame, labels: Sequence[str], axes: Sequence[str] = ()) -> Display:
    headers = ["task", *[a.split(".")[-1] for a in axes], "SFT data"]
    for lab in labels:
        headers.append(f"{lab}")
    for lab in labels[1:]:
        headers.append(f"{lab} - {labels[0]}")
    rows = []
    for _, r in df.iterrows():
        cells = [str(r["task"]), *[str(r[a]) for a in axes], variant_label(r)]
        for lab in labels:
            seeds = r.get(f"seeds[{lab}]")
            note = "" if _nan(seeds) else f" ({int(seeds)}/{int(r[f'seeds_planned[{lab}]'])})"
            cells.append(ci(r[f"acc[{lab}]"], r[f"acc_lo[{lab}]"], r[f"acc_hi[{lab}]"]) + note)
        for lab in labels[1:]:
            cells.append(signed_pct(r[f"delta[{lab}]"]))
        rows.append(cells)
    return Display("Final accuracy after RL (%), side by side", headers, rows,
                   align=["l"] * (len(axes) + 2) + ["r"] * (2 * len(labels) - 1),
                   notes=["mean [95% CI] (seeds done/planned); differences in points; "
                          "'-' = not in that sweep or not finished"])


# ---------------------------------------------------------------------------- renderers

def to_markdown(d: Display) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**{esc(d.title)}**", "", "| " + " | ".join(esc(h) for h in d.headers) + " |",
             "|" + "|".join("---:" if a == "r" else ":---" for a in d.align) + "|"]
    for row, b in zip(d.rows, d.bold):
        lines.append("| " + " | ".join(f"**{esc(c)}**" if bb and c != DASH else esc(c)
                                       for c, bb in zip(row, b)) + " |")
    if d.notes:
        lines.append("")
        lines += [f"_{esc(n)}_  " for n in d.notes]
    return "\n".join(lines) + "\n"


_TEX = {"→": r"$\to$", "Δ": r"$\Delta$", "★": r"$^\star$", "†": r"\textdagger{}", "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def _tex(c: str) -> str:
    return tex_escape(c)


def to_latex(d: Display) -> str:
    def cell(c: str, b: bool) -> str:
        return rf"\textbf{{{_tex(c)}}}" if b and c != DASH else _tex(c)

    lines = [r"% generated by r360 report (needs \usepackage{booktabs})", r"\begin{table}[t]", r"\centering",
             r"\small", rf"\begin{{tabular}}{{{''.join(d.align)}}}", r"\toprule",
             " & ".join(_tex(h) for h in d.headers) + r" \\", r"\midrule"]
    prev_task = None
    for row, b in zip(d.rows, d.bold):
        if prev_task is not None and row[0] != prev_task:
            lines.append(r"\midrule")
        prev_task = row[0]
        lines.append(" & ".join(cell(c, bb) for c, bb in zip(row, b)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(d.title)}. "
              + " ".join(_tex(n) for n in d.notes[:1]) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(d: Display, cls: str = "tbl") -> str:
    e = _html.escape
    out = [f'<table class="{cls}"><caption>{e(d.title)}</caption><thead><tr>']
    out += [f'<th class="{a}">{e(h)}</th>' for h, a in zip(d.headers, d.align)]
    out.append("</tr></thead><tbody>")
    for row, b in zip(d.rows, d.bold):
        out.append("<tr>" + "".join(
            f'<td class="{a}{" best" if bb else ""}{" missing" if c == DASH else ""}">{e(c)}</td>'
            for c, a, bb in zip(row, d.align, b)) + "</tr>")
    out.append("</tbody></table>")
    if d.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in d.notes) + "</ul>")
    return "".join(out)


def to_rich(d: Display):
    from rich.table import Table
    from rich.text import Text

    t = Table(title=d.title, title_justify="left")
    for h, a in zip(d.headers, d.align):
        t.add_column(h, justify="right" if a == "r" else "left")
    for row, b in zip(d.rows, d.bold):
        t.add_row(*[Text(c, style="bold green" if bb else ("dim" if c == DASH else "")) for c, bb in zip(row, b)])
    if d.notes:
        t.caption = "\n".join(d.notes)
        t.caption_justify = "left"
    return t


def write_all(d: Display, frame: pd.DataFrame, stem) -> list:
    """stem.md, stem.tex, stem.csv (the numbers, not the strings). Returns the paths."""
    from pathlib import Path

    from reasoning360 import atomic

    stem = Path(stem)
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".csv")]
    atomic.write_text(paths[0], to_markdown(d))
    atomic.write_text(paths[1], to_latex(d))
    with atomic.atomic_path(paths[2]) as tmp:
        frame.to_csv(tmp, index=False)
    return paths
