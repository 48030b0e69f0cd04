"""`r360 report SWEEP [SWEEP_B ...]`: tables, figures and one HTML file.

One sweep -> SWEEP/report/:
    main_table.{md,tex,csv}       per task x SFT data (k, cold start, baselines) and protocol:
                                  SFT set size, accuracy before / after RL (mean [95% CI] over
                                  seeds and items), RL gain, paired differences from cold start
                                  and k=0 with CIs; the best-k statements in words (md)
    differences.csv, cells.csv    every paired difference / every cell, per role and protocol
    best.csv                      every "which k (or axis value) is best" question, answered
    difficulty.{md,tex,csv}       accuracy per difficulty level (when the task records one)
    fig_*.{png,svg}               accuracy per SFT data, paired differences (forest), backtracks
                                  vs k, RL curves and per-seed curves per task, SFT loss
    report.html                   all of the above, plus sample traces per point
Several sweeps -> SWEEP/report/compare-<B>[-<C>...]/: matching cells and points side by
side (compare.{md,tex,csv}, compare_points.csv, fig_compare_accuracy.{png,svg}, compare.html).

A partial sweep reports what exists and lists what is missing (never as 0).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from reasoning360 import atomic
from reasoning360.sweep.store import STATES

from . import aggregate as A
from . import html as H
from . import plots as P
from . import tables as T
from .load import Sweep, load_sweep
from .study import ProtocolError


@dataclass
class Report:
    out: Path
    files: list[Path] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)     # stem -> Figure
    figure_problems: dict[str, list[str]] = field(default_factory=dict)
    main: Any = None                                           # the main table (DataFrame)
    difficulty: Any = None
    study: Any = None                                          # analysis.study.Study
    missing: list[str] = field(default_factory=list)


def figures_of(sweep: Sweep, table, study=None) -> list[tuple[str, str, Any]]:
    """(stem, caption, Figure) of every figure that has data. `table`: the main table of one
    or several protocols (concatenated); `study`: for the forest plots and SFT set sizes."""
    out = []
    sizes = _sizes(study)
    variants = list(sweep.points["variant"].astype(str).unique())      # one style per variant, every figure
    f = P.accuracy_vs_k(table, sweep.axes)
    if f is not None:
        out.append(("fig_accuracy_vs_k", "Test accuracy per SFT data (k dead ends per trace, then the "
                    "baselines with their SFT set size): after RL (filled) and before RL (hollow; cold start: "
                    "the base model), mean and 95% CI over seeds and test items; dotted line and band: cold "
                    "start after RL. A star marks a best k only where its paired CI against every other k "
                    "excludes 0.", f))
    if study is not None:
        for proto in study.protocols:
            f = P.forest(study.diffs, sweep.axes, protocol=proto, sizes=study.sizes)
            if f is not None:
                out.append((f"fig_differences_{_safe(proto)}", "Paired differences after RL "
                            f"({proto} protocol), in points with 95% CI: each SFT data vs cold start, vs k=0, "
                            "and after vs before RL of the same runs. Filled: the CI excludes 0.", f))
    f = P.backtracks_vs_k(table, sweep.axes)
    if f is not None:
        out.append(("fig_backtracks_vs_k", "Backtracks per test response: in the SFT traces (k), after SFT, "
                    "after RL.", f))
    steps = sweep.steps
    if not steps.empty and "task" in steps:
        for task in sorted(steps.loc[steps["role"] == "rl", "task"].astype(str).unique()):
            f = P.rl_curves(steps, task, sweep.axes, sizes=sizes, variants=variants)
            if f is not None:
                out.append((f"fig_rl_curves_{_safe(task)}", f"RL training curves for {task}, one line per SFT "
                            "data (the k sets, the baselines; cold start: RL from the base model); mean over "
                            "seeds, band = min..max over seeds.", f))
            f = P.rl_seed_curves(steps, task, sweep.axes, sizes=sizes)
            if f is not None:
                out.append((f"fig_rl_seeds_{_safe(task)}", f"RL reward of every seed for {task}, one panel "
                            "per SFT data: each seed (grey), the mean (black), the min..max band.", f))
    f = P.sft_loss(steps, sweep.axes, sizes=sizes, variants=variants)
    if f is not None:
        out.append(("fig_sft_loss", "SFT training loss per SFT data (mean over seeds, band = min..max).", f))
    return out


def _sizes(study) -> dict | None:
    if study is None or study.sizes.empty:
        return None
    return study.sizes.groupby("variant")["examples"].mean().to_dict()


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)


def sample_points(sweep: Sweep, max_points: int) -> list[str]:
    """Every point if there are few; else the lowest seed of each cell, up to max_points."""
    pts = sweep.points
    if len(pts) <= max_points:
        return list(pts["point"])
    first = pts.sort_values("seed").groupby(["task", *sweep.axes, "variant"], sort=False, dropna=False).head(1)
    return list(first["point"])[:max_points]


def build_report(sweep: Sweep | str | os.PathLike, out: str | os.PathLike | None = None, *,
                 n_boot: int = A.N_BOOT, seed: int = 0, samples: int = 2, max_sample_points: int = 60,
                 console=None, protocol: str | None = None) -> Report:
    import pandas as pd

    from .study import study as make_study

    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    out = Path(out) if out else sweep.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out, missing=list(sweep.missing))

    st = make_study(sweep, n_boot=n_boot, seed=seed, primary=protocol)
    rep.study = st
    tables = {p: st.table(p) for p in st.protocols}
    table = pd.concat([t for t in tables.values()], ignore_index=True) if tables else st.table()
    rep.main = tables[st.primary] if tables else table
    displays = []
    for p, t in tables.items():
        displays.append(T.main_display(t, sweep.axes, title=f"{sweep.name}: accuracy after RL, {p} protocol"))
        displays.append(T.before_display(t, sweep.axes, title=f"{sweep.name}: accuracy before RL, {p} protocol"))
    statements = st.statements()
    others = [s for p in st.protocols for r in ("rl_eval", "sft_eval") for s in st.statements(r, p)
              if s not in statements]
    md = (f"**{sweep.name}: which k is best?**\n\n" + T.statements_markdown(statements, st.notes) + "\n"
          + "\n".join(T.to_markdown(d) for d in displays))
    if others:
        md += "\n**Other protocols and before RL**\n\n" + T.statements_markdown(others)
    paths = [out / "main_table.md", out / "main_table.tex", out / "main_table.csv"]
    atomic.write_text(paths[0], md)
    atomic.write_text(paths[1], "\n".join(T.to_latex(d) for d in displays))
    _write_csv(table, paths[2])
    for name, frame in (("differences.csv", st.diffs), ("cells.csv", st.cells),
                        ("best.csv", st.best.drop(columns=["top_cell"], errors="ignore"))):
        _write_csv(frame, out / name)
        paths.append(out / name)
    rep.files += paths

    diff = A.difficulty_table(sweep, n_boot=n_boot, seed=seed)
    rep.difficulty = diff
    diff_ds = T.difficulty_display(diff, sweep.axes)
    if diff_ds:
        rep.files += _write_many(diff_ds, diff, out / "difficulty")

    figs = figures_of(sweep, table, st)
    for stem, _, fig in figs:
        rep.figures[stem] = fig
        problems = P.check_figure(fig)
        if problems:
            rep.figure_problems[stem] = problems
        rep.files += P.save(fig, out / stem)

    counts = sweep.points["state"].value_counts()
    sub = [f"{sweep.dir}", f"{len(sweep.points)} points: " + ", ".join(
        f"{int(counts.get(s, 0))} {s}" for s in STATES
        if counts.get(s, 0)) + f"; generated {H.stamp()}"]
    sections = [("summary", "Which k is best?", H.statements_html(statements, st.notes, others)),
                ("missing", f"Missing ({len(sweep.missing)})", H.missing_html(sweep.missing)),
                ("table", "Main table", H.tables_html(displays)
                 + "<p>Files: main_table.md, .tex, .csv; differences.csv, cells.csv, best.csv</p>")]
    forest = [(s, c, f) for s, c, f in figs if s.startswith("fig_differences_")]
    if forest:
        sections.append(("differences", "Paired differences", "".join(H.figure_html(f, c) for _, c, f in forest)))
    if diff_ds:
        sections.append(("difficulty", "By difficulty", H.tables_html(diff_ds)))
    rest = [(s, c, f) for s, c, f in figs if not s.startswith("fig_differences_")]
    if rest:
        sections.append(("figures", "Figures", "".join(H.figure_html(f, cap) for _, cap, f in rest)))
    elif not forest:
        sections.append(("figures", "Figures", "<p>No finished eval or logged metrics yet.</p>"))
    pts = sample_points(sweep, max_sample_points)
    more = "" if len(pts) == len(sweep.points) else (
        f"<p>{len(pts)} of {len(sweep.points)} points shown (lowest seed of each cell).</p>")
    sections.append(("samples", "Sample traces", H.legend_html(st.primary) + more
                     + H.samples_html(sweep, pts, n=samples, seed=seed, protocol=st.primary)))
    sections.append(("config", "Config", H.config_html(sweep.cfg)))
    doc = H.page(f"r360 report: {sweep.name}", sub, sections)
    atomic.write_text(out / "report.html", doc)
    rep.files.append(out / "report.html")
    if console is not None:
        for s_ in statements:
            console.print(s_, highlight=False, markup=False)
        for n in st.notes:
            console.print(f"[yellow]note:[/] {n}", highlight=False)
        for d in displays[:1]:
            console.print(T.to_rich(d))
        for d in diff_ds:
            console.print(T.to_rich(d))
    return rep


def _write_csv(frame, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _write_many(displays: Sequence[T.Display], frame, stem: Path) -> list[Path]:
    md = "\n".join(T.to_markdown(d) for d in displays)
    tex = "\n".join(T.to_latex(d) for d in displays)
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".csv")]
    atomic.write_text(paths[0], md)
    atomic.write_text(paths[1], tex)
    with atomic.atomic_path(paths[2]) as tmp:
        frame.to_csv(tmp, index=False)
    return paths


def build_comparison(sweeps: Sequence[Sweep | str | os.PathLike], out: str | os.PathLike | None = None, *,
                     n_boot: int = A.N_BOOT, seed: int = 0, console=None) -> Report:
    sweeps = [s if isinstance(s, Sweep) else load_sweep(s) for s in sweeps]
    labels = A._labels(sweeps)
    out = Path(out) if out else sweeps[0].dir / "report" / ("compare-" + "-".join(_safe(x) for x in labels[1:]))
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    for s, lab in zip(sweeps, labels):
        rep.missing += [f"[{lab}] {m}" for m in s.missing]
    cmp = A.compare_table(sweeps, labels, n_boot=n_boot, seed=seed)
    rep.main = cmp
    common_axes = [a for a in sweeps[0].axes if all(a in s.axes for s in sweeps)]
    d = T.compare_display(cmp, labels, common_axes)
    rep.files += T.write_all(d, cmp, out / "compare")
    pts = A.compare_points(sweeps, labels)
    with atomic.atomic_path(out / "compare_points.csv") as tmp:
        pts.to_csv(tmp, index=False)
    rep.files.append(out / "compare_points.csv")
    tables = [A.main_table(s, n_boot=n_boot, seed=seed) for s in sweeps]
    fig = P.compare_accuracy(tables, labels)
    sections = [("table", "Side by side", H.tables_html([d]))]
    if fig is not None:
        rep.figures["fig_compare_accuracy"] = fig
        problems = P.check_figure(fig)
        if problems:
            rep.figure_problems["fig_compare_accuracy"] = problems
        rep.files += P.save(fig, out / "fig_compare_accuracy")
        sections.append(("figures", "Figures", H.figure_html(fig, "Final accuracy after RL vs k, per sweep "
                                                                  "(95% bootstrap CI).")))
    sections.append(("missing", f"Missing ({len(rep.missing)})", H.missing_html(rep.missing)))
    for s, lab, t in zip(sweeps, labels, tables):
        sections.append((f"sweep-{_safe(lab)}", f"{lab}: main table",
                         H.tables_html([T.main_display(t, s.axes, title=f"{lab}: final accuracy after RL")])))
    doc = H.page("r360 report: " + " vs ".join(labels), [str(s.dir) for s in sweeps] + [f"generated {H.stamp()}"],
                 sections)
    atomic.write_text(out / "compare.html", doc)
    rep.files.append(out / "compare.html")
    if console is not None:
        console.print(T.to_rich(d))
    return rep


# ---------------------------------------------------------------------------- CLI

def configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweeps", nargs="+", metavar="SWEEP",
                        help="sweep directory or name (under $R360_ROOT/sweeps); two or more: side by side")
    parser.add_argument("--out", default=None, help="output directory (default: SWEEP/report, or "
                        "SWEEP/report/compare-<B> for several sweeps)")
    parser.add_argument("--samples", type=int, default=2,
                        help="correct and incorrect sample traces per point and eval (default 2)")
    parser.add_argument("--max-sample-points", type=int, default=60,
                        help="points with sample traces in the HTML (default 60)")
    parser.add_argument("--n-boot", type=int, default=A.N_BOOT, help="bootstrap replicates (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--protocol", default=None, help="decoding protocol of the headline statements and "
                        "sample traces (default: sample, the paper's, when the evals have it, else greedy)")


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from reasoning360.sweep.sweepdir import SweepDirError

    console = Console()
    if not console.is_terminal:         # piped or logged: wide enough for the tables
        console = Console(width=200)
    try:
        sweeps = [load_sweep(s) for s in args.sweeps]
    except SweepDirError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    if len(sweeps) == 1:
        try:
            rep = build_report(sweeps[0], args.out, n_boot=args.n_boot, seed=args.seed, samples=args.samples,
                               max_sample_points=args.max_sample_points, console=console, protocol=args.protocol)
        except ProtocolError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False)
            return 2
        html_path = rep.out / "report.html"
    else:
        rep = build_comparison(sweeps, args.out, n_boot=args.n_boot, seed=args.seed, console=console)
        html_path = rep.out / "compare.html"
    if rep.missing:
        console.print(f"[yellow]{len(rep.missing)} point(s) missing (left out, not counted as 0):[/]")
        for m in rep.missing[:20]:
            console.print(f"  {m}", highlight=False, markup=False)
        if len(rep.missing) > 20:
            console.print(f"  ... and {len(rep.missing) - 20} more (see the HTML report)")
    for stem, problems in rep.figure_problems.items():
        console.print(f"[yellow]figure {stem}:[/] " + "; ".join(problems), highlight=False)
    console.print(f"wrote {len(rep.files)} files to {rep.out}; open {html_path}", highlight=False)
    return 0
