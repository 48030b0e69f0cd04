"""The state of every grid point x stage of a sweep, derived, never stored.

A stage's state comes from its directory (reasoning360.sweep.store.StageDir.state, the one
definition the results table and the analysis loader use too). A Slurm sweep adds what only
Slurm knows, from exactly one `squeue --json` and one `sacct --json` call covering every job
in jobs.json, whatever the sweep's size: a stage whose job is live is `pending` (with Slurm's
reason) or `running`; a job that ended without DONE says why (timeout, node failure, out of
memory, cancelled, preempted) next to the directory's state.

A stage pending on a dependency that can never be satisfied (its upstream stage failed or was
cancelled, at any depth) is failed, not pending forever; a job Slurm still reports COMPLETING
whose stage failed (a lost node keeps it so until SlurmdTimeout) is failed, not running.

States: done, running, pending (Slurm only), failed, interrupted, not started.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import stages
from ..sweep import sweepdir
from ..sweep.store import StageDir
from ..tracking import last_row

METRIC = {"rl": ("reward_mean", "reward"), "sft": ("loss",), "eval": ("accuracy",)}
# Slurm end states that say why a job stopped short (shown next to the directory's state).
SLURM_WHY = {"TIMEOUT": "timeout", "NODE_FAIL": "node failure", "OUT_OF_MEMORY": "out of memory",
             "BOOT_FAIL": "boot failure", "DEADLINE": "deadline", "CANCELLED": "cancelled",
             "PREEMPTED": "preempted", "FAILED": "job failed", "COMPLETED": "job ended without DONE"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"}
ORDER = ("done", "running", "pending", "failed", "interrupted", "not started")


@dataclass
class Row:
    point: str
    role: str
    stage_id: str
    kind: str
    state: str                  # one of ORDER
    reason: str = ""
    step: int | None = None
    total: int | None = None
    metric_name: str = ""
    metric: float | None = None
    elapsed: float | None = None
    job: str = ""

    @property
    def label(self) -> str:
        return f"{self.state} ({self.reason})" if self.reason else self.state


@dataclass
class Snapshot:
    sweep_dir: Path
    rows: list[Row]
    counts: dict[str, int]
    slurm: bool
    taken: float

    def to_json(self) -> str:
        return json.dumps({"sweep_dir": str(self.sweep_dir), "counts": self.counts,
                           "rows": [asdict(r) for r in self.rows]}, default=str)


def stage_row(sd: StageDir, kind: str, ref: str | None, live: dict[str, Any], ended: dict[str, Any],
              totals: dict[str, int], now: float) -> Row:
    """One stage: its directory's state, then what Slurm says about job `ref` (live: squeue's
    tasks, ended: sacct's), then its progress (the tail of metrics.jsonl)."""
    st = sd.state()
    r = Row(point="", role="", stage_id=sd.id, kind=kind, state=st.state, reason=st.detail, job=ref or "")
    t = live.get(ref) if ref else None
    if st.state == "done":
        summ = sd.summary()
        r.elapsed = summ.get("wall_s")
        if kind == "eval":
            r.metric_name, r.metric = "accuracy", summ.get("accuracy")
    elif t is not None and t.state == "COMPLETING" and st.state == "failed":
        pass            # the job is over and its stage failed; Slurm is still cleaning up its nodes
    elif t is not None and t.state in _live_states():
        r.state, r.reason = _live(t, now)
        if r.state == "running":
            r.elapsed = now - t.start if t.start else None
    elif ref and (ended.get(ref) or t) is not None:
        a = ended.get(ref) or t          # squeue still lists jobs that ended within MinJobAge
        if a.start and a.end:
            r.elapsed = a.end - a.start
        why = SLURM_WHY.get(a.state, a.state.lower())
        if a.state == "NODE_FAIL" and a.nodes:
            why += f" on {a.nodes}"
        if st.state == "running":        # started on another node, and its job is over
            r.state = "interrupted" if a.state in ("CANCELLED", "PREEMPTED") else "failed"
            r.reason = why
        elif st.state == "not started":
            r.state, r.reason = "failed", f"{why} before the stage started"
        elif why not in r.reason and a.state != "FAILED":
            r.reason = f"{r.reason}; {why}" if r.reason else why
    if kind in METRIC and kind != "eval":
        last = last_row(sd.path)
        if last is not None:
            r.step = last.get("step")
            for name in METRIC[kind]:
                if last.get(name) is not None:
                    r.metric_name, r.metric = name, last[name]
                    break
        r.total = totals.get(sd.id)
        if r.total is None:
            try:
                r.total = stages.get(kind).total_steps(sd.spec())
            except (OSError, KeyError, ValueError):
                pass
    return r


def _live(t: Any, now: float) -> tuple[str, str]:
    """(state, reason) of a stage whose job squeue lists as live."""
    if t.state in RUNNING_STATES:
        return "running", ""
    if t.reason == "DependencyNeverSatisfied":     # an upstream job failed: it will never start
        return "failed", NEVER
    reason = t.reason if t.reason not in ("None", "") else t.state.lower()
    if t.state == "SUSPENDED":
        reason = "suspended"
    elif t.state.startswith("REQUEUE"):
        reason = "requeued"
    if t.restarts:
        reason += f", requeued x{t.restarts}"
    return "pending", reason


NEVER = "upstream failed: dependency never satisfied"


def doomed(plan: Any, rows: dict[str, Row]) -> None:
    """Slurm marks only the direct dependents of a failed job DependencyNeverSatisfied; a job
    pending on one of *those* waits on `Dependency` forever. So a stage pending on a dependency
    whose upstream stage failed (or was interrupted: nothing will resume it) is failed too, down
    the whole chain."""
    from .slurm.arrays import never_start

    waiting = {sid for sid, r in rows.items() if r.state == "pending" and r.reason.startswith("Dependency")}
    dead = {sid for sid, r in rows.items() if r.state in ("failed", "interrupted")}
    for sid in never_start(plan, waiting, dead):
        rows[sid].state, rows[sid].reason = "failed", NEVER


def _live_states() -> set[str]:
    from .slurm.query import LIVE

    return LIVE


def snapshot(sweep_dir: str | Path, use_slurm: bool = True) -> Snapshot:
    sweep_dir = Path(sweep_dir)
    plan, store = sweepdir.load_plan(sweep_dir)
    live: dict = {}
    ended: dict = {}
    totals: dict[str, int] = {}
    refs: dict[str, str] = {}
    slurm = False
    if (sweep_dir / "jobs.json").exists():
        from .slurm import query
        from .slurm.jobs import JobsFile

        jobs = JobsFile(sweep_dir)
        for a in jobs.arrays():
            totals.update(a.get("totals") or {})
        refs = {sid: r[-1][0] for sid, r in jobs.stage_refs().items()}
        ids = jobs.job_ids()
        slurm = bool(ids) and use_slurm and query.available()
        if slurm:     # the two calls, concurrently (sacct asks slurmdbd and is the slower)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as ex:
                fq, fa = ex.submit(query.squeue, ids), ex.submit(query.sacct, ids)
                live, ended = fq.result(), fa.result()
    now = time.time()
    cache: dict[str, Row] = {}
    for pp in plan.points:
        for sid in pp.stages.values():
            if sid not in cache:
                cache[sid] = stage_row(store.stage(sid), plan.stages[sid].kind, refs.get(sid), live, ended,
                                       totals, now)
    if slurm:
        doomed(plan, cache)
    rows = [Row(**{**asdict(cache[sid]), "point": pp.name, "role": role})
            for pp in plan.points for role, sid in pp.stages.items()]
    counts: dict[str, int] = {}
    for r in cache.values():
        counts[r.state] = counts.get(r.state, 0) + 1
    return Snapshot(sweep_dir, rows, counts, slurm, now)


# --------------------------------------------------------------------------- rendering

STYLE = {"done": "green", "running": "cyan", "pending": "yellow", "failed": "bold red",
         "interrupted": "magenta", "not started": "dim"}


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def _metric(r: Row) -> str:
    if r.metric is None:
        return "-"
    return f"{r.metric_name} {r.metric:.3g}"


def _step(r: Row) -> str:
    if r.step is None and (r.total is None or r.state not in ("running", "done")):
        return "-" if r.total is None else f"-/{r.total}"
    return f"{r.step or 0}/{r.total or '?'}"


def summary_line(snap: Snapshot) -> str:
    parts = [f"{snap.counts[k]} {k}" for k in ORDER if snap.counts.get(k)]
    src = "squeue+sacct+dirs" if snap.slurm else "directories"
    return f"{snap.sweep_dir.name}: {sum(snap.counts.values())} stages: " + ", ".join(parts) + f" [{src}]"


def table(snap: Snapshot, rows: list[Row] | None = None, title: str | None = None):
    from rich.table import Table

    t = Table(title=title or summary_line(snap), title_justify="left")
    for col, just in (("point", "left"), ("stage", "left"), ("state", "left"), ("step", "right"),
                      ("last", "right"), ("elapsed", "right"), ("job", "left")):
        t.add_column(col, justify=just, no_wrap=col in ("point", "job"))
    for r in rows if rows is not None else snap.rows:
        t.add_row(r.point, r.role, f"[{STYLE.get(r.state, '')}]{r.label}[/]", _step(r), _metric(r),
                  _dur(r.elapsed), r.job or "-")
    return t


def plain(snap: Snapshot) -> str:
    """The same table as text (fast for thousands of rows, and for pipes)."""
    head = ("point", "stage", "state", "step", "last", "elapsed", "job")
    body = [(r.point, r.role, r.label, _step(r), _metric(r), _dur(r.elapsed), r.job or "-") for r in snap.rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [summary_line(snap), fmt.format(*head)] + [fmt.format(*b) for b in body]
    return "\n".join(lines)
