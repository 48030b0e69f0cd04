"""Run a plan's stages concurrently on one machine: `launcher.workers` > 1.

Why: a ~1M-parameter model cannot keep two cores busy with one stage (2 threads gave ~1.4x one
thread), but the stage graph has independent work (the k points' SFTs, cold start's RL), so two
one-thread stages at once finish the study sooner. Each stage runs as its own process,
`python -m reasoning360.sweep.runner STORE ID --threads N` (the run_stage a Slurm job calls), in
its own session with its output in `<stage>/local.log`, and killed if this process dies; this
process only schedules and shows progress (one bar per running stage, from its metrics.jsonl).

A stage left running alone with nothing else to start (the tail of a sweep) gets USR1: it
then uses every core. Ctrl-C once sends USR2 to every running stage (checkpoint at the next step boundary, stop);
twice sends SIGTERM (stop now; the last interval checkpoint remains). Either way the same
command resumes. A failed stage skips the stages below it; other points go on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from reasoning360 import stages
from reasoning360.cores import usable_cores
from reasoning360.tracking import last_step
from reasoning360.sweep.plan import Plan
from reasoning360.sweep.store import Store

LOG = "local.log"
REPO = Path(__file__).resolve().parents[3]


@dataclass
class Running:
    sid: str
    proc: subprocess.Popen
    started: float
    log: Any
    boosted: bool = False          # told to use every core (USR1)


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
    cores = usable_cores()
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

    def start(sid: str, n_threads: int) -> Running:
        sd = store.stage(sid).path
        sd.mkdir(parents=True, exist_ok=True)
        log = open(sd / LOG, "ab")
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(n_threads),
               # this checkout's package, whatever the directory the sweep was started from
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "reasoning360.sweep.runner", str(store.root), sid,
                                 "--threads", str(n_threads)], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, preexec_fn=_die_with_parent)
        return Running(sid, proc, time.time(), log)

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
                rc = r.proc.poll()
                if rc is None:
                    continue
                r.log.close()
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
                    if len(running) < workers and ready(sid) and not (fail_fast and failed):
                        # a stage that starts alone, with nothing else to run beside it (the data
                        # stage every point waits for), gets every core
                        alone = not running and not any(o != sid and o not in failed and ready(o)
                                                        and not store.stage(o).is_done() for o in todo)
                        running[sid] = start(sid, cores if alone else threads)
                        running[sid].boosted = alone
                        st = plan.stages[sid]
                        bars.add(sid, f"{_label(st)}", stages.get(st.kind).total_steps(st.spec))
                report_points()
                if not running:
                    break
                if len(running) == 1 and threads < cores and not any(
                        sid not in running and sid not in failed and not store.stage(sid).is_done()
                        and ready(sid) for sid in todo):
                    (r,) = running.values()     # the tail: one stage left running, nothing to start
                    if not r.boosted and time.time() - r.started > 10:   # its handler is set by then
                        r.boosted = True
                        os.kill(r.proc.pid, signal.SIGUSR1)
            for sid in running:
                bars.update(sid, last_step(store.stage(sid).path) or 0)
            time.sleep(0.5)
    finally:
        bars.close()
        signal.signal(signal.SIGINT, previous)
        for r in running.values():           # only on an exception in this loop
            r.proc.kill()
    report_points()
    return len(failed) - len(skipped), bool(interrupts[0])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the launcher dies (even by SIGKILL), so a
    rerun never finds the stage locked by an orphan (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


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
