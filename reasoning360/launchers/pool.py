"""Run a plan's stages concurrently on one machine: `launcher.workers` > 1.

Why: a ~1M-parameter model cannot keep two cores busy with one stage (2 threads gave ~1.4x one
thread), but the stage graph has independent work (the k points' SFTs, cold start's RL), so two
one-thread stages at once finish the study sooner. Each stage runs in its own process, forked
from a server that has imported torch once (launchers/stage_process.py: what
`python -m reasoning360.sweep.runner STORE ID --threads N`, the run_stage a Slurm job calls,
runs), in its own session with its output in `<stage>/local.log`, and killed if this process
dies; this process only schedules and shows progress (one bar per running stage).

Threads per stage follow from the plan alone, never from timing, so the same command gives the
same numbers (a different thread count changes float reduction order, and training amplifies
it): a stage that every point shares (the data, the pretrained base) runs alone, nothing
started beside it, with the pool's whole budget, workers x threads; every other stage gets
`threads`.

Ctrl-C once sends USR2 to every running stage (checkpoint at the next step boundary, stop);
twice sends SIGTERM (stop now; the last interval checkpoint remains). Either way the same
command resumes. A failed stage skips the stages below it; other points go on.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from reasoning360 import stages
from reasoning360.tracking import last_step
from reasoning360.sweep.plan import Plan
from reasoning360.sweep.store import Store

LOG = "local.log"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Running:
    sid: str
    proc: multiprocessing.process.BaseProcess


def descendants(plan: Plan) -> dict[str, int]:
    """Stage id -> how many stages depend on it, directly or not."""
    children = plan.children()
    memo: dict[str, set[str]] = {}

    def below(sid: str) -> set[str]:
        if sid not in memo:
            memo[sid] = set()
            for c in children[sid]:
                memo[sid] |= {c} | below(c)
        return memo[sid]

    return {sid: len(below(sid)) for sid in plan.stages}


def solo_stages(plan: Plan) -> set[str]:
    """The stages every point of the plan shares (the data, the base model): each runs alone."""
    return set.intersection(*(set(pp.stages.values()) for pp in plan.points)) if plan.points else set()


def _processes() -> multiprocessing.context.BaseContext:
    """Stage processes fork from one server that imported torch and the stage code once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["reasoning360.launchers.stage_process"])
    return ctx


def run_pool(plan: Plan, store: Store, console: Console, workers: int, threads: int,
             fail_fast: bool = False, on_point_done=None) -> tuple[int, bool]:
    """Run every not-DONE stage of `plan`, at most `workers` at once, `threads` torch threads
    each. Returns (failed stages, interrupted). `on_point_done(point_plan, error)` is called
    once per point when its last stage ends (error: None or why it did not finish)."""
    todo = [sid for sid in plan.stages if not store.stage(sid).is_done()]
    # Stages with more work below them first (a critical-path rule: the k points' SFTs before
    # any RL), then plan order; so the last minutes are not one long chain on one core.
    below = descendants(plan)
    todo.sort(key=lambda sid: -below[sid])
    solo = solo_stages(plan)
    processes = _processes()
    failed: dict[str, str] = {}                    # stage id -> why (failed, or an upstream failed)
    skipped: set[str] = set()                      # ... of those, the ones whose upstream failed
    running: dict[str, Running] = {}
    interrupts = [0]
    reported: set[str] = set()

    def on_sigint(*_):
        interrupts[0] += 1
        sig = signal.SIGUSR2 if interrupts[0] == 1 else signal.SIGTERM
        console.print("\n[yellow]interrupt: " + ("checkpointing the running stages (Ctrl-C again to stop now)"
                      if sig == signal.SIGUSR2 else "stopping now") + "[/]")
        for r in running.values():
            try:
                os.kill(r.proc.pid, sig)
            except ProcessLookupError:
                pass

    def blocked(sid: str) -> str | None:
        for dep in plan.stages[sid].deps.values():
            if dep in failed:
                return f"upstream {dep} did not finish"
        return None

    def ready(sid: str) -> bool:
        return all(store.stage(d).is_done() for d in plan.stages[sid].deps.values())

    def start(sid: str) -> Running:
        from . import stage_process

        n_threads = workers * threads if sid in solo else threads
        sd = store.stage(sid).path
        sd.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(n_threads),
               # this checkout's package, whatever the directory the sweep was started from
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        proc = processes.Process(target=stage_process.run, name=f"r360-{sid}",
                                 args=(str(store.root), sid, n_threads, str(sd / LOG), env, os.getpid()))
        proc.start()
        return Running(sid, proc)

    def why_failed(sid: str, rc: int) -> str:
        text = (store.stage(sid).failure() or "").strip().splitlines()
        last = text[-1] if text else f"exit code {rc}"
        return f"{plan.stages[sid].kind} failed: {last} (log: {store.stage(sid).path / LOG})"

    def report_points() -> None:
        if on_point_done is None:
            return
        for pp in plan.points:
            if pp.name in reported:
                continue
            sids = list(pp.stages.values())
            bad = next((failed[s] for s in sids if s in failed), None)
            if bad or all(store.stage(s).is_done() for s in sids):
                reported.add(pp.name)
                on_point_done(pp, bad)

    previous = signal.signal(signal.SIGINT, on_sigint)
    bars = _Bars(console)
    try:
        while True:
            for sid in list(running):
                r = running[sid]
                rc = r.proc.exitcode
                if rc is None:
                    continue
                r.proc.close()                    # its pipe to the fork server
                del running[sid]
                bars.remove(sid)
                if not store.stage(sid).is_done() and not interrupts[0]:
                    failed[sid] = why_failed(sid, rc)
            if interrupts[0]:
                if not running:
                    break
            else:
                for sid in todo:
                    if sid in failed or sid in running or store.stage(sid).is_done():
                        continue
                    why = blocked(sid)
                    if why:
                        failed[sid] = why
                        skipped.add(sid)
                        continue
                    if any(r in solo for r in running):
                        break                     # a shared stage runs alone
                    if sid in solo and running and ready(sid):
                        break                     # ... once the running ones have finished
                    if len(running) < workers and ready(sid) and not (fail_fast and failed):
                        running[sid] = start(sid)
                        st = plan.stages[sid]
                        bars.add(sid, f"{_label(st)}", stages.get(st.kind).total_steps(st.spec))
                report_points()
                if not running:
                    break
            for sid in running:
                bars.update(sid, last_step(store.stage(sid).path) or 0)
            time.sleep(0.5)
    finally:
        bars.close()
        signal.signal(signal.SIGINT, previous)
        for r in running.values():           # only on an exception in this loop
            r.proc.kill()
            r.proc.join()
    report_points()
    return len(failed) - len(skipped), bool(interrupts[0])


def _label(stage) -> str:
    s = stage.spec
    what = {"traces": f"k={s.get('k')}", "distill": s.get("source", "")}.get(stage.kind, "")
    words = [stage.kind, s.get("task", ""), what, f"({stage.points[0] if stage.points else stage.id})"]
    return " ".join(w for w in words if w)


class _Bars:
    """A rich bar per running stage on a terminal; start/finish lines in a log file."""

    def __init__(self, console: Console):
        self.console, self.ids = console, {}
        self.live = console.is_terminal
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=console, transient=True)
            self.p.start()

    def add(self, sid: str, label: str, total: int | None) -> None:
        if self.live:
            self.ids[sid] = self.p.add_task(label, total=total)
        else:
            self.console.print(f"start {label}", highlight=False)
        self.ids.setdefault(sid, None)

    def update(self, sid: str, step: int) -> None:
        if self.live and self.ids.get(sid) is not None:
            self.p.update(self.ids[sid], completed=step)

    def remove(self, sid: str) -> None:
        tid = self.ids.pop(sid, None)
        if self.live and tid is not None:
            self.p.remove_task(tid)

    def close(self) -> None:
        if self.live:
            self.p.stop()
