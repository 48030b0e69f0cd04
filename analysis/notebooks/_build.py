"""Writes backtrack_study.ipynb and training_dynamics.ipynb (outputs cleared) from the cells
below: edit here, then `python analysis/notebooks/_build.py`.

Each notebook reads the sweep named by the environment variable R360_SWEEP_DIR (a sweep
directory, or a name under $R360_ROOT/sweeps), default runs/sweeps/backtrack, and runs top to
bottom on any sweep, partial ones included (cells print what is missing instead of failing).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
import os
import pandas as pd
from IPython.display import HTML, Markdown, display

from analysis import load_sweep
from analysis import aggregate as A, plots as P, tables as T
from analysis.study import study

SWEEP_DIR = os.environ.get("R360_SWEEP_DIR", "runs/sweeps/backtrack")
sweep = load_sweep(SWEEP_DIR)
pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 40)
print(sweep.describe())"""


def show_fig_code(expr: str, what: str) -> str:
    return f"""fig = {expr}
if fig is None:
    print("no {what} yet")
else:
    display(fig)"""


BACKTRACK = [
    new_markdown_cell("""# How much backtracking is enough?

The backtrack study of one sweep: accuracy before and after RL per task and number of dead ends
`k` in the SFT traces (mean and 95% CI over seeds and test items), the paired differences from
cold start and from k=0 (same test items, same seeds), which k is best -- declared only when its
paired CI against every other k excludes 0 --, how much of the backtracking the model keeps
after RL, and accuracy by difficulty.

Set `R360_SWEEP_DIR` (a sweep directory or a sweep name) before starting the kernel, or edit
`SWEEP_DIR` below. Missing points (failed, running, never started) are listed and left out of
every mean: they never count as 0."""),
    new_code_cell(SETUP),
    new_markdown_cell("## Which k is best? (in words, from the paired CIs)"),
    new_code_cell("""st = study(sweep)
print("\\n".join(st.statements()) or "no finished evals of two or more k yet")
for note in st.notes:
    print("note:", note)"""),
    new_markdown_cell("## Main table, per decoding protocol"),
    new_code_cell("""table = A.main_table(sweep, study=st)
for proto in st.protocols:
    t = st.table(proto)
    display(Markdown(T.to_markdown(T.main_display(t, sweep.axes, title=f"after RL, {proto} protocol"))))
    display(Markdown(T.to_markdown(T.before_display(t, sweep.axes, title=f"before RL, {proto} protocol"))))
table"""),
    new_markdown_cell("## The declared best k and its differences"),
    new_code_cell("""best = table[table["best"]][["task", *sweep.axes, "variant", "acc", "acc_lo", "acc_hi", "d_k0", "d_k0_lo",
                            "d_k0_hi", "gain"]]
if best.empty:
    print("no k is declared best (see the statements above)")
else:
    display(best)"""),
    new_markdown_cell("## Accuracy per SFT data, and the paired differences"),
    new_code_cell(show_fig_code("P.accuracy_vs_k(pd.concat([st.table(p) for p in st.protocols]), sweep.axes)",
                                "finished evals")),
    new_code_cell(show_fig_code("P.forest(st.diffs, sweep.axes, protocol=st.primary, sizes=st.sizes)",
                                "paired differences")),
    new_markdown_cell("""## Does RL keep the backtracking that SFT taught?

Backtracks per test response: in the SFT traces (`k`), after SFT, after RL."""),
    new_code_cell(show_fig_code("P.backtracks_vs_k(table, sweep.axes)", "evals of SFT runs")),
    new_code_cell("""ev = sweep.evals[sweep.evals["state"] == "done"]
if ev.empty:
    print("no finished evals yet")
else:
    kept = ev.pivot_table(index=["task", *sweep.axes, "variant"], columns="role",
                          values=["mean_backtracks", "accuracy"], aggfunc="mean", observed=True)
    display(kept)"""),
    new_markdown_cell("## Do responses that backtrack succeed more often?"),
    new_code_cell("""items = sweep.items
rl_items = items[items["role"] == "rl_eval"] if not items.empty else items
if rl_items.empty or "backtracks" not in rl_items:
    print("no eval items after RL yet")
else:
    bins = pd.cut(rl_items["backtracks"], [-0.5, 0.5, 1.5, 2.5, 4.5, float("inf")],
                  labels=["0", "1", "2", "3-4", "5+"])
    by_bt = (rl_items.assign(backtracks_in_response=bins)
             .groupby(["task", "variant", "backtracks_in_response"], observed=True)["correct"]
             .agg(["mean", "size"]).rename(columns={"mean": "accuracy", "size": "responses"}))
    display(by_bt)"""),
    new_markdown_cell("## Accuracy by difficulty"),
    new_code_cell("""diff = A.difficulty_table(sweep)
if diff.empty:
    print("no difficulty levels recorded in the eval items (or no finished RL evals)")
for d in T.difficulty_display(diff, sweep.axes):
    display(Markdown(T.to_markdown(d)))"""),
    new_markdown_cell("## Sample traces of the best k, or of the highest mean (backtracks highlighted)"),
    new_code_cell("""from analysis.html import samples_html, legend_html

points = []
ks = table[table["k"].notna() & table["acc"].notna()]
top = best if not best.empty else ks.loc[ks.groupby("task")["acc"].idxmax()] if len(ks) else ks
if not top.empty:
    for _, b in top.iterrows():
        sel = sweep.points[(sweep.points["task"] == b["task"]) & (sweep.points["variant"] == b["variant"])]
        points += list(sel["point"].head(1))
if points:
    display(HTML("<style>mark.bt{background:#ffd33d}pre.resp{white-space:pre-wrap}</style>"
                 + legend_html(st.primary) + samples_html(sweep, points, n=1, open_first=len(points),
                                                          protocol=st.primary)))
else:
    print("no finished point to sample from")"""),
    new_markdown_cell("## What is missing"),
    new_code_cell("""print("\\n".join(sweep.missing) or "every point finished")"""),
]

DYNAMICS = [
    new_markdown_cell("""# Training dynamics

SFT loss and the RL curves of one sweep (reward, validation accuracy, response length,
backtracks per response), one line per SFT dataset `k`, mean over seeds with a min..max band,
and every seed's reward curve. Does RL keep or drop the backtracking that SFT taught?

Set `R360_SWEEP_DIR` (a sweep directory or a sweep name) before starting the kernel, or edit
`SWEEP_DIR` below. Stages still running show the steps logged so far."""),
    new_code_cell(SETUP),
    new_code_cell("""steps = sweep.steps
print(f"{len(steps):,} logged steps from {steps['stage_id'].nunique() if len(steps) else 0} stages")
steps.head()"""),
    new_markdown_cell("## SFT loss"),
    new_code_cell(show_fig_code("P.sft_loss(steps, sweep.axes)", "SFT metrics")),
    new_markdown_cell("## RL curves"),
    new_code_cell("""rl_tasks = sorted(steps.loc[steps["role"] == "rl", "task"].astype(str).unique()) if len(steps) else []
if not rl_tasks:
    print("no RL metrics yet")
for task in rl_tasks:
    fig = P.rl_curves(steps, task, sweep.axes)
    if fig is not None:
        display(fig)"""),
    new_markdown_cell("## Every seed"),
    new_code_cell("""for task in rl_tasks:
    fig = P.rl_seed_curves(steps, task, sweep.axes)
    if fig is None:
        print(f"{task}: fewer than two seeds per SFT data: no per-seed figure")
    else:
        display(fig)"""),
    new_markdown_cell("""## Backtracking over RL: start vs end

Backtracks per rollout response in the first and last 10% of RL steps."""),
    new_code_cell("""rl = steps[steps["role"] == "rl"] if len(steps) else steps
key = next((k for k in ("backtracks_mean", "backtracks") if k in rl and rl[k].notna().any()), None)
if key is None:
    print("no backtrack metric logged by RL yet")
else:
    last = rl.groupby("point", observed=True)["step"].transform("max")
    phase = pd.Series("middle", index=rl.index)
    phase[rl["step"] <= 0.1 * last] = "first 10%"
    phase[rl["step"] >= 0.9 * last] = "last 10%"
    start_end = (rl.assign(phase=phase)[phase != "middle"]
                 .groupby(["task", "variant", "phase"], observed=True)[key].mean().unstack("phase"))
    display(start_end)"""),
    new_markdown_cell("## Throughput and wall time per stage"),
    new_code_cell("""st = sweep.stages
if st.empty:
    print("no stages")
else:
    display(st.groupby(["role", "state"], observed=True)["wall_s"].agg(["count", "mean", "sum"]))
tps = [c for c in ("tokens_per_s",) if c in steps]
if tps and len(steps):
    display(steps.groupby("role", observed=True)[tps].median())"""),
    new_markdown_cell("## What is missing"),
    new_code_cell("""print("\\n".join(sweep.missing) or "every point finished")"""),
]


def write(cells, name: str) -> Path:
    for i, c in enumerate(cells):
        c["id"] = f"c{i:02d}"          # stable ids: rebuilding gives the same file
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    path = HERE / name
    nbformat.write(nb, str(path))
    return path


if __name__ == "__main__":
    for cells, name in ((BACKTRACK, "backtrack_study.ipynb"), (DYNAMICS, "training_dynamics.ipynb")):
        print(write(cells, name))
