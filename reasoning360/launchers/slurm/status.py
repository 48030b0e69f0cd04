"""The state of every grid point x stage of a sweep, derived, never stored.

Sources, per refresh: the stage directories (DONE, FAILED, attempts.jsonl, the tail of
metrics.jsonl), and — for a Slurm sweep — exactly one `squeue --json` and one
`sacct --json` call covering every job in jobs.json, whatever the sweep's size. A job Slurm
no longer reports falls back to what its directory says; a sweep run by the local launcher
(no jobs.json) is read from the directories alone.

States: done, running, pending (reason), failed (reason), cancelled, preempted, not submitted.
A job pending on a dependency that can never be satisfied is failed, not pending forever.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reasoning360.sweep import sweepdir
from reasoning360.sweep.graph import ROLES
from reasoning360.sweep.graph import Plan, PointPlan, Stage
from reasoning360.sweep.grid import Point
from reasoning360.launchers.slurm import query as slurm_query
from reasoning360.launchers.slurm.jobs import JobsFile

FAILED_STATES = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "TIMEOUT"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"}
METRIC = {"rl": ("reward_mean", "reward"), "sft": ("loss",), "eval": ("accuracy",)}


@dataclass
class Row:
    point: str
    role: str
    stage_id: str
    kind: str
    state: str                  # done | running | pending | failed | cancelled | preempted | not submitted
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


def tail_row(path: Path, chunk: int = 4096) -> dict | None:
    """The last complete JSON line of a file (metrics.jsonl), reading only its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chunk))
            data = fh.read()
    except OSError:
        return None
    for line in reversed(data.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


class _Dir:
    """A stage directory, read with plain os calls (status touches thousands per refresh)."""

    __slots__ = ("id", "path")

    def __init__(self, root: str, sid: str):
        self.id, self.path = sid, os.path.join(root, sid)

    def f(self, name: str) -> str:
        return os.path.join(self.path, name)

    def is_done(self) -> bool:
        return os.path.exists(self.f("DONE"))

    def summary(self) -> dict:
        try:
            with open(self.f("summary.json")) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def failure(self) -> str | None:
        try:
            with open(self.f("FAILED")) as fh:
                text = fh.read()
        except OSError:
            return None
        return None if self.is_done() else text


def load_plan(sweep_dir: Path) -> tuple[Plan, str]:
    """(plan, store root) from plan.json alone (sweepdir.load also parses sweep.yaml: slow)."""
    rec = json.loads((Path(sweep_dir) / sweepdir.PLAN).read_text())
    stages = {}
    for sid, st in rec["stages"].items():
        spec = {"kind": st["kind"], **{("checkpoint" if r == "init" else r): d for r, d in st["deps"].items()}}
        stages[sid] = Stage(sid, st["kind"], spec, {}, st.get("points", []))
    points = [PointPlan(Point(p["task"], p["k"], p["baseline"], p["seed"], p.get("axes") or {}), p["stages"])
              for p in rec["points"]]
    return Plan(points, stages), rec["store"]


_LOCKS: tuple[float, set[tuple[int, int, int]]] | None = None


def _held_flocks() -> set[tuple[int, int, int]]:
    """(major, minor, inode) of every file with a flock held on this machine (/proc/locks, read
    once per refresh): a lock is observed without being taken, so a launcher that tries to take
    it at that moment never finds it busy because of us."""
    global _LOCKS
    now = time.time()
    if _LOCKS is not None and now - _LOCKS[0] < 1.0:
        return _LOCKS[1]
    held = set()
    with open("/proc/locks") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "FLOCK":
                try:
                    maj, mino, ino = parts[5].split(":")
                    held.add((int(maj, 16), int(mino, 16), int(ino)))
                except ValueError:
                    continue
    _LOCKS = (now, held)
    return held


def _locked(path: str) -> bool:
    """True when a process on this machine holds the stage lock (a local launcher running it)."""
    try:
        st = os.stat(os.path.join(path, ".lock"))
    except OSError:
        return False
    try:
        held = _held_flocks()
    except OSError:
        return False
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held


def _last_attempt(path: str) -> dict | None:
    return tail_row(os.path.join(path, "attempts.jsonl"))


def _total(sd: _Dir, kind: str, totals: dict[str, int]) -> int | None:
    if sd.id in totals:
        return totals[sd.id]
    if kind not in ("sft", "rl"):
        return None
    try:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(sd.f("spec.yaml")) as fh:
            spec = yaml.load(fh.read(), Loader=loader)["spec"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return _spec_total(spec)


def _spec_total(spec: dict[str, Any]) -> int | None:
    if spec.get("kind") == "sft":
        return (spec.get("sft") or {}).get("max_steps")
    if spec.get("kind") == "rl":
        return (spec.get("rl") or {}).get("steps")
    return None


def stage_row(sd: _Dir, kind: str, ref: str | None, q: dict, acct: dict, totals: dict,
              now: float) -> Row:
    r = Row(point="", role="", stage_id=sd.id, kind=kind, state="not submitted", job=ref or "")
    done = sd.is_done()
    t = q.get(ref) if ref else None
    if done:
        r.state = "done"
        summ = sd.summary()
        r.elapsed = summ.get("wall_s")
        if kind == "eval":
            r.metric_name, r.metric = "accuracy", summ.get("accuracy")
    elif t is not None and t.state in slurm_query.LIVE and never_runs(t):
        r.state, r.reason = "failed", "dependency never satisfied"
    elif t is not None and t.state == "COMPLETING" and sd.failure() is not None:
        # the job is over and its stage failed; Slurm is still cleaning up its nodes (for a
        # lost node, until it declares it dead: SlurmdTimeout and more)
        r.state, r.reason = "failed", why_failed(t, sd.failure())
    elif t is not None and t.state in slurm_query.LIVE:
        if t.state in RUNNING_STATES:
            r.state = "running"
            r.elapsed = now - t.start if t.start else None
        else:
            r.state = "pending"
            reason = t.reason if t.reason not in ("None", "") else t.state.lower()
            if t.state == "SUSPENDED":
                reason = "suspended"
            elif t.state.startswith("REQUEUE"):
                reason = "requeued"
            if t.restarts:
                reason += f", requeued x{t.restarts}"
            r.reason = reason
    else:
        a = acct.get(ref) if ref else None
        a = a or t            # squeue still lists jobs that ended within MinJobAge
        failure = sd.failure()
        if a is not None and a.state not in slurm_query.LIVE:
            if a.start and a.end:
                r.elapsed = a.end - a.start
            if failure is not None or a.state in FAILED_STATES:
                r.state, r.reason = "failed", why_failed(a, failure)
            elif a.state == "CANCELLED":
                r.state = "cancelled"
            elif a.state == "PREEMPTED":
                r.state = "preempted"
            elif a.state == "COMPLETED":
                r.state, r.reason = "failed", "job ended without DONE"
            else:
                r.state, r.reason = "failed", a.state.lower()
        elif a is not None:     # sacct knows it as pending/running but squeue lost it: lag
            r.state = "pending"
        else:
            r.state = _from_dirs(sd, failure, ref)
    if kind in ("sft", "rl"):
        last = tail_row(sd.f("metrics.jsonl"))
        if last is not None:
            r.step = last.get("step")
            for name in METRIC[kind]:
                if last.get(name) is not None:
                    r.metric_name, r.metric = name, last[name]
                    break
        r.total = _total(sd, kind, totals) if not done or r.step is None else (_total(sd, kind, totals) or r.step)
    return r


# --- what Slurm's state says (kept apart from the directory state above)

def never_runs(t: slurm_query.TaskState) -> bool:
    """A pending job whose dependency can never be satisfied (an upstream job failed or was
    cancelled; we submit with --kill-on-invalid-dep=no, so Slurm keeps it pending forever)."""
    return t.state == "PENDING" and t.reason == "DependencyNeverSatisfied"


def why_failed(a: slurm_query.TaskState, failure: str | None) -> str:
    """The reason shown beside `failed`: the job's own one-line verdict when it left one (a
    lost node, named, and why; a requeue limit), else what Slurm says (a node failure names
    the job's nodes). A traceback is not a reason: `r360 logs` shows it."""
    first = (failure or "").strip().splitlines()[:1]
    if first and not first[0].startswith("Traceback"):
        return first[0]
    if a.state == "NODE_FAIL":
        return f"node_fail on {a.nodes}" if a.nodes else "node_fail"
    return a.state.lower() if a.state in FAILED_STATES and a.state != "FAILED" else ""


def doomed(plan: Plan, rows: dict[str, Row]) -> None:
    """Slurm marks only the direct dependents of a failed job DependencyNeverSatisfied; a job
    pending on one of *those* waits on `Dependency` forever. So a stage pending on a dependency
    whose upstream stage failed (or was cancelled) is failed too, down the whole chain."""
    changed = True
    while changed:
        changed = False
        for sid, r in rows.items():
            if r.state != "pending" or not r.reason.startswith("Dependency"):
                continue
            ups = [rows.get(d) for d in plan.stages[sid].deps.values()]
            if any(u is not None and u.state in ("failed", "cancelled") for u in ups):
                r.state, r.reason = "failed", "dependency never satisfied"
                changed = True


def _from_dirs(sd: _Dir, failure: str | None, ref: str | None) -> str:
    if failure is not None:
        return "failed"
    if not os.path.exists(sd.path):
        return "not submitted"
    if _locked(sd.path):
        return "running"
    last = _last_attempt(sd.path)
    if last is not None:
        return {"preempted": "preempted", "interrupted": "cancelled", "failed": "failed"}.get(
            last.get("status"), "failed" if ref else "not submitted")
    return "failed" if ref else "not submitted"


def snapshot(sweep_dir: str | Path, use_slurm: bool = True) -> Snapshot:
    sweep_dir = Path(sweep_dir)
    plan, store_root = load_plan(sweep_dir)
    store_root = str(Path(store_root).resolve())
    jobs = JobsFile(sweep_dir)
    ids = jobs.job_ids()
    q: dict = {}
    acct: dict = {}
    slurm = bool(ids) and use_slurm and slurm_query.available()
    if slurm:     # the two calls, concurrently (sacct asks slurmdbd and is the slower)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as ex:
            fq, fa = ex.submit(slurm_query.squeue, ids), ex.submit(slurm_query.sacct, ids)
            q, acct = fq.result(), fa.result()
    totals: dict[str, int] = {}
    for a in jobs.arrays():
        totals.update(a.get("totals") or {})
    now = time.time()
    cache: dict[str, Row] = {}
    for pp in plan.points:
        for role in ROLES:
            sid = pp.stages.get(role)
            if sid is not None and sid not in cache:
                latest = jobs.latest(sid)
                cache[sid] = stage_row(_Dir(store_root, sid), plan.stages[sid].kind,
                                       latest[0] if latest else None, q, acct, totals, now)
    if slurm:
        doomed(plan, cache)
    rows: list[Row] = []
    for pp in plan.points:
        for role in ROLES:
            sid = pp.stages.get(role)
            if sid is None:
                continue
            row = copy.copy(cache[sid])
            row.point, row.role = pp.name, role
            rows.append(row)
    counts: dict[str, int] = {}
    for r in cache.values():
        counts[r.state] = counts.get(r.state, 0) + 1
    return Snapshot(sweep_dir, rows, counts, slurm, now)


# --------------------------------------------------------------------------- rendering

STYLE = {"done": "green", "running": "cyan", "pending": "yellow", "failed": "bold red",
         "cancelled": "magenta", "preempted": "magenta", "not submitted": "dim"}


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
    order = ["done", "running", "pending", "failed", "cancelled", "preempted", "not submitted"]
    parts = [f"{snap.counts[k]} {k}" for k in order if snap.counts.get(k)]
    src = "squeue+sacct+dirs" if snap.slurm else "directories"
    return f"{snap.sweep_dir.name}: {sum(snap.counts.values())} stages: " + ", ".join(parts) + f" [{src}]"


def table(snap: Snapshot, rows: list[Row] | None = None, title: str | None = None):
    from rich.table import Table

    t = Table(title=title or summary_line(snap), title_justify="left")
    for col, just in (("point", "left"), ("stage", "left"), ("state", "left"), ("step", "right"),
                      ("last", "right"), ("elapsed", "right"), ("job", "left")):
        t.add_column(col, justify=just, no_wrap=col in ("point", "job"))
    for r in rows if rows is not None else snap.rows:
        step = _step(r)
        t.add_row(r.point, r.role, f"[{STYLE.get(r.state, '')}]{r.label}[/]", step, _metric(r),
                  _dur(r.elapsed), r.job or "-")
    return t


def plain(snap: Snapshot) -> str:
    """The same table as text (fast for thousands of rows, and for pipes)."""
    head = ("point", "stage", "state", "step", "last", "elapsed", "job")
    body = []
    for r in snap.rows:
        step = _step(r)
        body.append((r.point, r.role, r.label, step, _metric(r), _dur(r.elapsed), r.job or "-"))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [summary_line(snap), fmt.format(*head)] + [fmt.format(*b) for b in body]
    return "\n".join(lines)
