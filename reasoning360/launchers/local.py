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

from reasoning360.cores import usable_cores
from reasoning360.engines.context import PreemptFlag, Preempted
from reasoning360.sweep import results
from reasoning360.sweep.graph import ROLES, Plan
from reasoning360.sweep.runner import run_stage
from reasoning360.sweep.store import Store

from .base import Launcher


class LocalLauncher(Launcher):
    name = "local"

    def launch(self, c, plan, store, sweep_dir, console) -> int:
        return launch(c, plan, store, sweep_dir, console)

    def cancel(self, sweep_dir: Path, console: Console) -> int:
        console.print("a local sweep runs in the process that started it: press Ctrl-C there "
                      "(once: checkpoint and stop)", highlight=False)
        return 2


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
    workers, threads = concurrency(c)
    console.print(f"sweep [bold]{c['sweep']['name']}[/]: {len(plan.points)} points, "
                  f"{len(plan.stages)} stages -> {sweep_dir}"
                  + (f" ({workers} stages at a time, {threads} thread{'s' * (threads > 1)} each)" if workers > 1 else ""),
                  highlight=False)
    if workers > 1:
        from reasoning360.launchers.pool import run_pool

        def point_done(pp, error):
            walls = [store.stage(s).summary().get("wall_s", 0) for s in pp.stages.values()
                     if store.stage(s).is_done()]
            console.print(_status_line(pp, store, sum(walls), error), highlight=False)

        failed, interrupted = run_pool(plan, store, console, workers, threads,
                                       fail_fast=bool(c["sweep"].get("fail_fast")), on_point_done=point_done)
        if interrupted:
            console.print("[yellow]stopped[/]: checkpoint saved for every running stage; run the same command to resume")
            return 130
        return _finish(c, plan, store, sweep_dir, console, failed)
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
    return _finish(c, plan, store, sweep_dir, console, failed)


def _finish(c, plan: Plan, store: Store, sweep_dir: Path, console: Console, failed: int) -> int:
    rows = results.rows(plan, store)
    console.print(results.render(rows, title=f"{c['sweep']['name']}: results"))
    csv, pq = results.write(rows, sweep_dir)
    console.print(f"wrote {csv} and {pq}", highlight=False)
    return 1 if failed else 0


def concurrency(c: dict[str, Any]) -> tuple[int, int]:
    """(stages at once, torch threads each) from launcher.workers and engine.threads. `auto`:
    one stage on a GPU; on CPU one thread per stage below 4 cores, else two, and as many stages
    as that fills (a tiny model gains little from more threads, much from running stages side
    by side)."""
    cores = usable_cores()
    want = c["launcher"].get("workers", 1)
    threads = int(c["engine"].get("threads") or 0)
    if want == "auto":
        if _on_gpu(c):
            return 1, threads
        threads = threads or (1 if cores < 4 else 2)
        return max(1, cores // threads), threads
    return want, threads or max(1, cores // want)      # main.validate refused anything but auto or an int >= 1


def _on_gpu(c: dict[str, Any]) -> bool:
    device = str(c["engine"].get("device") or "auto")
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch
    return torch.cuda.is_available()


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
