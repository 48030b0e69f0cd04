"""The plan as Slurm job arrays: one array per stage role and resource shape, chunked to
MaxArraySize, throttled with %N, chained by dependencies.

Indexing. Every stage gets the index of the first grid point that uses it (its *owner*),
and every array of chunk c holds the tasks whose owner index is in [c*M, (c+1)*M), with
task id = index - c*M (M = MaxArraySize). Arrays are sparse (`--array=0,4,8-9%64`), so
task i of every role belongs to the same point, and `aftercorr` can chain them.

Dependencies (measured on Slurm 22.05, see tests/test_slurm_arrays.py):
  * `aftercorr:A` lets task i start when task i of A completed OK; but a task with no
    task i in A waits for the *whole* of A (and never runs if any task of A fails). So
    aftercorr is used only between arrays whose tasks correspond one to one.
  * A stage shared by several downstream stages (the data stage of a task, an SFT run
    reused by RL variants) is depended on by task: `afterok:<jobid>_<taskid>`. A
    dependency applies to a whole array, so downstream tasks are grouped by the exact set
    of such task ids they wait for, one sub-array per group (e.g. the RL variants of each
    SFT run form one array that waits for that run only).
  * Upstream stages that are already queued or running from an earlier submission are
    depended on by their recorded `jobid_taskid`; DONE stages are not depended on at all,
    so their dependents start at once.
  * If exact grouping would split one role into more than `launcher.max_groups` arrays,
    dependencies are coarsened in steps (shared CPU stages first) to `afterok:<jobid>`
    on the whole upstream array: correct, never early, possibly later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from reasoning360 import stages
from reasoning360.sweep.plan import Plan
from reasoning360.launchers.slurm.resources import Resources

CPU_KINDS = ("data", "traces")


@dataclass
class Array:
    name: str
    role: str
    kind: str
    chunk: int
    offset: int
    tasks: dict[int, str]                     # task id -> stage id
    resources: Resources
    throttle: int
    corr: list[str] = field(default_factory=list)            # arrays: aftercorr
    after_tasks: list[tuple[str, int]] = field(default_factory=list)  # (array, task): afterok
    after_all: list[str] = field(default_factory=list)       # arrays: afterok on all tasks
    after_jobs: list[str] = field(default_factory=list)      # earlier submissions: "123_4"
    coarsened: int = 0
    job_id: str | None = None

    @property
    def array_spec(self) -> str:
        return compress(sorted(self.tasks)) + (f"%{self.throttle}" if self.throttle < len(self.tasks) else "")

    def dependency(self, ids: dict[str, str]) -> str:
        """The sbatch --dependency value, given the job id of every array named."""
        parts = []
        if self.corr:
            parts.append("aftercorr:" + ":".join(ids[n] for n in self.corr))
        oks = ([f"{ids[n]}_{t}" for n, t in self.after_tasks] + [ids[n] for n in self.after_all]
               + list(self.after_jobs))
        if oks:
            parts.append("afterok:" + ":".join(oks))
        return ",".join(parts)

    def describe_deps(self) -> str:
        parts = [f"aftercorr {n}" for n in self.corr]
        by: dict[str, list[int]] = {}
        for n, t in self.after_tasks:
            by.setdefault(n, []).append(t)
        parts += [f"afterok {n}[{compress(sorted(ts))}]" for n, ts in by.items()]
        parts += [f"afterok {n}[*]" for n in self.after_all]
        if self.after_jobs:
            parts.append(f"afterok queued {', '.join(self.after_jobs[:3])}"
                         + (f" +{len(self.after_jobs) - 3}" if len(self.after_jobs) > 3 else ""))
        return "; ".join(parts) or "-"


def never_start(plan: Plan, waiting: set[str], dead: set[str]) -> set[str]:
    """The stages of `waiting` (jobs pending on a dependency) that can never start: one of their
    upstream stages is `dead` (ended without DONE, or has no job), or is itself such a stage.
    Every dependency is afterok/aftercorr, and Slurm says DependencyNeverSatisfied only for
    the direct dependents of a failed job, and only at its next dependency check."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for sid in waiting - out:
            if any(d in dead or d in out for d in plan.stages[sid].deps.values()):
                out.add(sid)
                changed = True
    return out


def compress(ids: list[int]) -> str:
    """[0,1,2,5,7,8] -> "0-2,5,7-8"."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def stage_roles(plan: Plan) -> tuple[dict[str, str], dict[str, int]]:
    """stage id -> role, and stage id -> owner index (first point that uses it). A stage with
    several roles (a k point's SFT that is also a distill baseline's teacher) takes the
    earliest in pipeline order, so arrays built in that order always follow their upstream arrays."""
    order = {r: i for i, r in enumerate(stages.role_names())}
    role, owner = {}, {}
    for i, pp in enumerate(plan.points):
        for r, sid in pp.stages.items():
            owner.setdefault(sid, i)
            if sid not in role or order[r] < order[role[sid]]:
                role[sid] = r
    return role, owner


def build(plan: Plan, submit: set[str], live: dict[str, str],
          resources_of: Callable[[str, str], Resources], *, max_array_size: int,
          max_groups: int = 16, throttle: int = 64) -> list[Array]:
    """Arrays for the stages in `submit` (ids), in submission order.

    live: stage id -> "jobid_task" of a queued/running job from an earlier submission.
    Stages neither in `submit` nor in `live` are taken as DONE (no dependency).
    resources_of(stage_id, kind) -> Resources of that stage's job.
    """
    role_of, owner = stage_roles(plan)
    M = max(1, int(max_array_size))
    where: dict[str, tuple[str, int]] = {}          # stage id -> (array name, task id)
    fanout: dict[tuple[str, str], int] = {}         # (upstream sid, downstream role) -> count
    for sid in submit:
        for dep in plan.stages[sid].deps.values():
            if dep in submit:
                k = (dep, role_of[sid])
                fanout[k] = fanout.get(k, 0) + 1
    arrays: list[Array] = []
    n_chunks = 1 + max((owner[s] for s in submit), default=0) // M
    for role in stages.role_names():
        sids = sorted((s for s in submit if role_of[s] == role), key=lambda s: owner[s])
        if not sids:
            continue
        for chunk in range(n_chunks):
            lo, hi = chunk * M, (chunk + 1) * M
            in_chunk = [s for s in sids if lo <= owner[s] < hi]
            if in_chunk:
                arrays += _role_chunk(plan, role, chunk, lo, in_chunk, owner, where, fanout, live,
                                      resources_of, max_groups, throttle, n_chunks)
    return arrays


def _edges(plan, sid, owner, where, fanout, live, role):
    """(corr arrays, specific (array, task) refs, earlier-job refs) of one stage."""
    corr, tasks, jobs = set(), set(), set()
    for dep in plan.stages[sid].deps.values():
        if dep in where:
            arr, t = where[dep]
            if owner[dep] == owner[sid] and fanout.get((dep, role), 0) == 1:
                corr.add(arr)
            else:
                tasks.add((arr, t))
        elif dep in live:
            jobs.add(live[dep])
    return corr, tasks, jobs


def _role_chunk(plan, role, chunk, lo, sids, owner, where, fanout, live, resources_of, max_groups,
                throttle, n_chunks) -> list[Array]:
    kind = plan.stages[sids[0]].kind
    edges = {s: _edges(plan, s, owner, where, fanout, live, role) for s in sids}
    res = {s: resources_of(s, plan.stages[s].kind) for s in sids}

    def key(s, level):
        corr, tasks, jobs = edges[s]
        all_ = set()
        if level >= 1:   # shared CPU stages: wait for their whole array
            all_ |= {a for a, _ in tasks if a.split("-")[0] in CPU_KINDS}
            tasks = {(a, t) for a, t in tasks if a.split("-")[0] not in CPU_KINDS}
        if level >= 2:   # every shared stage
            all_ |= {a for a, _ in tasks}
            tasks = set()
            jobs = {j.split("_")[0] for j in jobs}
        if level >= 3:   # even one-to-one edges
            all_ |= corr
            corr = set()
        return (res[s].shape(), frozenset(corr), frozenset(tasks), frozenset(all_), frozenset(jobs))

    level = 0
    while True:
        groups: dict[tuple, list[str]] = {}
        for s in sids:
            groups.setdefault(key(s, level), []).append(s)
        if len(groups) <= max_groups or level == 3:
            break
        level += 1
    out = []
    for g, (k, members) in enumerate(sorted(groups.items(), key=lambda kv: owner[kv[1][0]])):
        _, corr, tasks, all_, jobs = k
        name = role + (f"-c{chunk}" if n_chunks > 1 else "") + (f"-g{g}" if len(groups) > 1 else "")
        a = Array(name=name, role=role, kind=kind, chunk=chunk, offset=lo,
                  tasks={owner[s] - lo: s for s in members}, resources=res[members[0]],
                  throttle=max(1, min(int(throttle), len(members))),
                  corr=sorted(corr), after_tasks=sorted(tasks), after_all=sorted(all_),
                  after_jobs=sorted(jobs), coarsened=level)
        for s in members:
            where[s] = (name, owner[s] - lo)
        out.append(a)
    return out
