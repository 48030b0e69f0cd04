"""Run a plan in this process, point after point, stage after stage.

Ctrl-C once asks the running stage to checkpoint at its next step and stop; twice stops
at once (the last interval checkpoint remains). Either way, the same command resumes.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ...engines.context import PreemptFlag, Preempted
from .. import results
from ..graph import ROLES, Plan
from ..runner import run_stage
from ..store import Store


def print_plan(plan: Plan, store: Store, console: Console) -> None:
    from rich.table import Table

    t = Table(title=f"plan: {len(plan.points)} points, {len(plan.stages)} stages")
    t.add_column("point", no_wrap=True)
    for role in ROLES:
        t.add_column(role)
    for pp in plan.points:
        cells = []
        for role in ROLES:
            sid = pp.stages.get(role)
            cells.append("" if sid is None else ("done" if store.stage(sid).is_done() else "to run"))
        t.add_row(pp.name, *cells)
    console.print(t)


def launch(c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path, console: Console) -> int:
    if c["sweep"]["dry_run"]:
        print_plan(plan, store, console)
        console.print("dry run: nothing was run")
        return 0
    console.print(f"sweep [bold]{c['sweep']['name']}[/]: {len(plan.points)} points, "
                  f"{len(plan.stages)} stages -> {sweep_dir}", highlight=False)
    preempt = PreemptFlag()
    failed = 0
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(*_):
        console.print("\n[yellow]interrupt: checkpointing the running stage (Ctrl-C again to stop now)[/]")
        preempt.request()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        for pp in plan.points:
            t0 = time.time()
            error = None
            for role in ROLES:
                sid = pp.stages.get(role)
                if sid is None:
                    continue
                if not store.stage(sid).is_done():
                    console.print(f"[dim]{pp.name}[/] {role} ({sid})", highlight=False)
                try:
                    run_stage(store, sid, show_progress=True, preempt=preempt)
                except Preempted:
                    console.print(f"[yellow]stopped[/] {pp.name} {role}: checkpoint saved; "
                                  "run the same command to resume")
                    return 130
                except KeyboardInterrupt:
                    console.print(f"[yellow]stopped[/] {pp.name} {role}; run the same command to resume")
                    return 130
                except Exception as e:  # one point's failure does not stop the others
                    error = f"{role} failed: {type(e).__name__}: {e}"
                    failed += 1
                    if c["sweep"].get("fail_fast"):
                        console.print(f"[red]✗ {pp.name}[/] {error}", highlight=False)
                        return 1
                    break
            console.print(_status_line(pp, store, time.time() - t0, error), highlight=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    rows = results.rows(plan, store)
    console.print(results.render(rows, title=f"{c['sweep']['name']}: results"))
    csv, pq = results.write(rows, sweep_dir)
    console.print(f"wrote {csv} and {pq}", highlight=False)
    return 1 if failed else 0


def _status_line(pp, store: Store, seconds: float, error: str | None) -> str:
    if error:
        return f"[red]✗[/] {pp.name}: {error}"
    def acc(role):
        sid = pp.stages.get(role)
        s = store.stage(sid).summary() if sid else {}
        return s.get("accuracy"), s.get("format_rate")
    sft, _ = acc("sft_eval")
    rl, fmt = acc("rl_eval")
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"
    return (f"[green]✓[/] {pp.name}: before RL {pct(sft)} -> after RL {pct(rl)} "
            f"(format {pct(fmt)}) in {seconds:.0f}s")
