"""`launcher=local`: run a plan on this machine, `launcher.workers` stages at a time, each in
its own process (reasoning360.launchers.pool, the one local scheduler), then print the results.

Ctrl-C once asks every running stage to checkpoint at its next step and stop; twice stops at
once (the last interval checkpoint remains). `r360 cancel SWEEP` from another shell does what
Ctrl-C once does. Either way, the same command resumes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

from rich.console import Console

from reasoning360 import atomic, stages
from reasoning360.cores import usable_cores
from reasoning360.sweep import results
from reasoning360.sweep.plan import Plan
from reasoning360.sweep.store import Store

from .base import LaunchError, Launcher, run_report, write_results

PID_FILE = "local-launcher.json"        # in the sweep directory while a local launcher runs it


class LocalLauncher(Launcher):
    name = "local"
    reads = ("launcher.name", "launcher.workers", "paths", "sweep.name", "sweep.dry_run", "sweep.fail_fast",
             "sweep.overwrite", "sweep.report")

    def validate(self, c: dict[str, Any], plan: Plan) -> None:
        if c["engine"]["device"] == "cuda" and not _cuda_available():
            raise LaunchError(f"engine.device: cuda requested (scale={c['scale_name']}) but this machine has "
                              "no GPU; run it on a cluster with launcher=slurm cluster=<site>, or use scale=cpu")

    def launch(self, c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path, console: Console) -> int:
        if c["sweep"]["dry_run"]:
            print_plan(plan, store, console)
            console.print("dry run: nothing was run")
            return 0
        from .pool import run_pool

        workers, threads = concurrency(c)
        console.print(f"sweep [bold]{c['sweep']['name']}[/]: {len(plan.points)} points, "
                      f"{len(plan.stages)} stages -> {sweep_dir} ({workers} stage{'s' * (workers > 1)} at a time, "
                      f"{threads} thread{'s' * (threads > 1)} each)", highlight=False)

        def point_done(pp, error):
            walls = [store.stage(s).summary().get("wall_s", 0) for s in pp.stages.values()
                     if store.stage(s).is_done()]
            console.print(_status_line(pp, store, sum(walls), error), highlight=False)

        atomic.write_json(Path(sweep_dir) / PID_FILE, {"pid": os.getpid(), "host": socket.gethostname()})
        try:
            failed, interrupted = run_pool(plan, store, console, workers, threads,
                                           fail_fast=c["sweep"]["fail_fast"], on_point_done=point_done)
        finally:
            (Path(sweep_dir) / PID_FILE).unlink(missing_ok=True)
        if interrupted:
            console.print("[yellow]stopped[/]: checkpoint saved for every running stage; run the same command to resume")
            return 130
        rows = write_results(plan, store, Path(sweep_dir))
        console.print(results.render(rows, title=f"{c['sweep']['name']}: results"))
        console.print(f"wrote {Path(sweep_dir) / 'results.csv'}", highlight=False)
        if failed:
            return 1
        if c["sweep"]["report"]:
            console.print(f"r360 report {sweep_dir}", highlight=False)
            return run_report(Path(sweep_dir))
        return 0

    def cancel(self, sweep_dir: Path, console: Console) -> int:
        """Ctrl-C once, from another shell: SIGINT to the launcher running the sweep."""
        path = Path(sweep_dir) / PID_FILE
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            console.print("nothing to cancel: no local launcher is running this sweep", highlight=False)
            return 0
        if info.get("host") != socket.gethostname():
            console.print(f"the sweep runs on {info.get('host')}: run r360 cancel there", highlight=False)
            return 2
        try:
            os.kill(int(info["pid"]), signal.SIGINT)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            console.print("nothing to cancel: the launcher that ran this sweep is gone", highlight=False)
            return 0
        console.print(f"asked the local launcher (pid {info['pid']}) to checkpoint every running stage and stop",
                      highlight=False)
        return 0


def print_plan(plan: Plan, store: Store, console: Console) -> None:
    from rich.table import Table

    t = Table(title=f"plan: {len(plan.points)} points, {len(plan.stages)} stages")
    t.add_column("point", no_wrap=True)
    roles = stages.role_names()
    for role in roles:
        t.add_column(role)
    for pp in plan.points:
        cells = []
        for role in roles:
            sid = pp.stages.get(role)
            cells.append("" if sid is None else ("done" if store.stage(sid).is_done() else "to run"))
        t.add_row(pp.name, *cells)
    console.print(t)


def concurrency(c: dict[str, Any]) -> tuple[int, int]:
    """(stages at once, torch threads each) from launcher.workers and engine.threads (0: all the
    cores a stage gets). `auto`: one stage on a GPU; on CPU one thread per stage below 4 cores,
    else two, and as many stages as that fills (a tiny model gains little from more threads,
    much from running stages side by side)."""
    cores = usable_cores()
    want, threads = c["launcher"]["workers"], c["engine"]["threads"]
    if want == "auto":
        if _on_gpu(c):
            return 1, threads or cores
        threads = threads or (1 if cores < 4 else 2)
        return max(1, cores // threads), threads
    return want, threads or max(1, cores // want)


def _on_gpu(c: dict[str, Any]) -> bool:
    device = c["engine"]["device"]
    if device == "cuda":
        return True
    return device == "auto" and _cuda_available()


def _cuda_available() -> bool:
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
