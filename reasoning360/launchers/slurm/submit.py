"""Plan -> arrays -> sbatch: what `python sweep.py launcher=slurm`, `r360 resubmit` and
`r360 render` share.

Order of work: check the site profile and every resource request against the partition
(before anything is written or submitted), ask squeue once which of the sweep's recorded
jobs are still queued, submit only stages that are neither DONE nor queued, record the job
ids in jobs.json, and return. Nothing keeps running on the login node.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from reasoning360 import atomic
from reasoning360 import stages
from reasoning360.sweep.plan import Plan
from reasoning360.sweep.store import Store
from reasoning360.launchers.slurm import arrays as arrays_mod
from reasoning360.launchers.slurm import resources, sbatch, query as slurm_query
from reasoning360.launchers.slurm.jobs import JobsFile, locked
from reasoning360.launchers.slurm.resources import ResourceError, Resources

STUCK_REASONS = ("DependencyNeverSatisfied",)


def slurm_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / "slurm"


def logs_dir(sweep_dir: Path) -> Path:
    return slurm_dir(sweep_dir) / "logs"


def _launcher(c: dict) -> dict:
    return c["launcher"]


def stage_needs_ray(c: dict, kind: str, spec: dict, runtime: dict, res: Resources) -> bool:
    """launcher.ray: `always`, `never`, or `auto` — a Ray cluster when the job spans several
    nodes or the stage's kind says it needs one (the engine decides: local GRPO with rollout
    workers, verl's main_ppo)."""
    mode = c["launcher"]["ray"]          # auto | always | never (sbatch.check_launcher)
    if mode == "always":
        return True
    if mode == "never":
        return False
    return res.nodes > 1 or stages.get(kind).needs_ray(spec, runtime)


def stage_driver_cpus(spec: dict, runtime: dict) -> int:
    """CPUs of a multi-node job's head kept out of its Ray cluster for the stage's own process:
    the engine's answer (its optional `driver_cpus`, see reasoning360.engines); else 1."""
    if "engine" not in spec:          # data, traces, distill: no engine, one node
        return 1
    from reasoning360.engines import get_engine

    hook = getattr(get_engine(spec["engine"]), "driver_cpus", None)
    return 1 if hook is None else int(hook(spec["kind"], spec, runtime))


SKIPPED_WITHOUT_SLURM = ("that each partition exists and is UP, time limits against its MaxTime, nodes, "
                         "CPUs, GPUs, memory and features against its nodes, MaxArraySize (1001 assumed)")


def check_resources(c: dict, plan: Plan, need_slurm: bool, sweep_dir: Path | None = None
                    ) -> tuple[dict[str, Resources], Any, sbatch.Site]:
    """Resolve and check every stage kind's resources and every value that reaches a job file;
    (kind -> Resources, ClusterInfo or None when Slurm is not here, the checked Site)."""
    resources.check_profile(c)
    kinds = sorted({s.kind for s in plan.stages.values()})
    res = {k: resources.resolve(c, k) for k in kinds}
    res["analysis"] = resources.resolve(c, resources.ANALYSIS)
    kinds.append("analysis")
    if sweep_dir is None:
        sweep_dir = Path(c["paths"]["sweeps"]) / c["sweep"]["name"]
    site = sbatch.check(c, sweep_dir, res)
    info = None
    if slurm_query.available():
        try:
            info = slurm_query.cluster_info()
        except slurm_query.SlurmError:
            if need_slurm:
                raise
            info = None             # the client is here but no controller answers: a dry run still plans
    elif need_slurm:
        raise ResourceError("launcher.name: slurm, but sbatch/squeue are not on PATH here; "
                            "submit from a login node, or use sweep.dry_run=true / r360 render")
    if info is not None:
        for k in kinds:
            resources.check_against(res[k], info)
    return res, info, site




def queue_state(jobs: JobsFile, store: Store, plan: Plan, done: set[str]
                ) -> tuple[dict[str, str], list[str], dict[str, slurm_query.TaskState]]:
    """(stage id -> live job ref, stuck job refs, squeue snapshot) from at most one squeue call.

    Live jobs are this sweep's (jobs.json) and, for content-addressed stages shared with other
    sweeps, whatever job the stage's marker names: a stage another sweep has queued is waited
    for, not submitted twice. Stuck: a job that will never start (DependencyNeverSatisfied, or
    still pending on an upstream stage that ended without DONE, which Slurm may not say yet):
    it is replaced, not waited for."""
    if not slurm_query.available():
        return {}, [], {}
    refs = {sid: r[-1][0] for sid, r in jobs.stage_refs().items()}
    for sid in set(plan.stages) - done:
        if sid not in refs:
            ref = store.stage(sid).job_ref()
            if ref:
                refs[sid] = ref
    ids = set(jobs.job_ids()) | {r.split("_")[0] for r in refs.values()}
    if not ids:
        return {}, [], {}
    q = slurm_query.squeue(ids)
    live, stuck = {}, []
    for sid, ref in refs.items():
        t = q.get(ref)
        if t is None or t.state not in slurm_query.LIVE:
            continue
        if t.state == "PENDING" and t.reason in STUCK_REASONS:
            stuck.append(ref)
        else:
            live[sid] = ref
    waiting = {sid for sid, ref in live.items()
               if q[ref].state == "PENDING" and q[ref].reason.startswith("Dependency")}
    for sid in arrays_mod.never_start(plan, waiting, set(plan.stages) - done - set(live)):
        stuck.append(live.pop(sid))
    return live, stuck, q


def launch(c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path, console: Console, *,
           only: set[str] | None = None, mode: str = "launch", note: str = "launch") -> int:
    """mode: launch (submit) | dry_run (print the plan) | render (write sbatch files)."""
    sweep_dir = Path(sweep_dir).resolve()      # a relative paths.root: from where the user ran
    if c["sweep"]["dry_run"]:
        mode = "dry_run"
    t0 = time.perf_counter()
    try:
        res, info, site = check_resources(c, plan, need_slurm=(mode == "launch"), sweep_dir=sweep_dir)
    except (ResourceError, slurm_query.SlurmError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    la = _launcher(c)
    max_arr = info.max_array_size if info else 1001
    if la["max_array_size"] is not None:
        max_arr = min(max_arr, int(la["max_array_size"]))
    jobs = JobsFile(sweep_dir)
    with (locked(sweep_dir) if mode == "launch" else _nullctx()):
        done = {sid for sid in plan.stages if store.stage(sid).is_done()}
        try:
            live, stuck, q = queue_state(jobs, store, plan, done)
        except slurm_query.SlurmError as e:
            if mode == "launch":
                console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
                return 2
            live, stuck, q = {}, [], {}     # no controller answers: the dry run shows the whole plan
        todo = {sid for sid in plan.stages if sid not in done and sid not in live}
        if only is not None:
            todo &= set(only)
        specs = {sid: _record(store, plan, sid) for sid in todo}

        def resources_of(sid: str, kind: str) -> Resources:
            return res[kind]

        arrs = arrays_mod.build(plan, todo, live, resources_of, max_array_size=max_arr,
                                max_groups=int(la["max_groups"]),
                                throttle=int(c["sweep"]["array_parallelism"]))
        if mode == "dry_run":
            print_plan(c, plan, arrs, res, done, live, console, max_arr)
            _print_skipped(info, console)
            return 0
        if mode == "render":
            out = render(c, plan, store, sweep_dir, arrs, res, live, specs, site)
            console.print(f"wrote {len(arrs)} sbatch file(s) and {out / 'submit.sh'}", highlight=False)
            _print_skipped(info, console)
            return 0
        if not arrs:
            _nothing_to_do(c, plan, store, sweep_dir, done, live, console)
            return 0
        # stuck dependents of what is resubmitted, and the sweep's pending analysis job (a new
        # one waits for everything), go first, in one scancel call
        cancel = [ref for ref in stuck if _sid_of(jobs, ref) in todo]
        cancel += [j["job_id"] for j in jobs.analysis_jobs()
                   if j["job_id"] in q and q[j["job_id"]].state == "PENDING"]
        if cancel:
            slurm_query.scancel(cancel)
        records, analysis, err = _submit_all(c, plan, store, sweep_dir, arrs, res, live, specs, jobs, site)
        jobs.add(records, analysis, note=note)
    dt = time.perf_counter() - t0
    n_tasks = sum(len(a["tasks"]) for a in records)
    console.print(f"sweep [bold]{c['sweep']['name']}[/]: {len(plan.points)} points, {len(plan.stages)} stages "
                  f"({len(done)} done, {len(live)} queued) -> {sweep_dir}", highlight=False)
    for a in records:
        console.print(f"  {a['name']:<18} job {a['job_id']:<8} {len(a['tasks']):>5} task(s)  "
                      f"{a['dependency'] or '-'}", highlight=False)
    if analysis:
        console.print(f"  {'analysis':<18} job {analysis['job_id']:<8}     1 job      afterany", highlight=False)
    if err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 1
    console.print(f"submitted {len(records)} array(s), {n_tasks} task(s) in {dt:.2f}s; "
                  f"follow with: r360 status {sweep_dir}", highlight=False)
    return 0


def _print_skipped(info, console) -> None:
    if info is None:
        console.print(f"not checked (no Slurm controller answers here, these need scontrol): {SKIPPED_WITHOUT_SLURM}; checked: "
                      "the site profile, every value that reaches a job file, the launcher's timings",
                      highlight=False, soft_wrap=True)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _sid_of(jobs: JobsFile, ref: str) -> str | None:
    jid, _, tid = ref.partition("_")
    for a in jobs.arrays():
        if a["job_id"] == jid:
            return a["tasks"].get(tid)
    return None


def _record(store: Store, plan: Plan, sid: str) -> tuple[dict, dict]:
    """(spec, runtime) of a stage: from the plan, or from the store for a plan read back from
    plan.json (resubmit, render)."""
    st = plan.stages[sid]
    if st.spec:
        return st.spec, st.runtime
    rec = store.stage(sid).record()
    return rec["spec"], rec.get("runtime") or {}


def array_file_doc(c: dict, store: Store, sweep_dir: Path, arr: arrays_mod.Array,
                   specs: dict[str, tuple[dict, dict]]) -> dict:
    """What the job body reads (reasoning360.launchers.slurm.job): its stages and the launcher's
    knobs, read strictly (checked by sbatch.check_launcher: 0 means 0)."""
    la = _launcher(c)
    any_ray = any(stage_needs_ray(c, arr.kind, *specs[s], arr.resources) for s in arr.tasks.values())
    return {"store": str(store.root), "sweep_dir": str(Path(sweep_dir).resolve()), "name": arr.name,
            "role": arr.role, "kind": arr.kind, "offset": arr.offset,
            "tasks": {str(t): s for t, s in sorted(arr.tasks.items())},
            "ray": any_ray, "ray_join_timeout_s": float(la["ray_join_timeout_s"]),
            "driver_cpus": max(stage_driver_cpus(*specs[s]) for s in arr.tasks.values()),
            "gpus": arr.resources.gpus, "cpus": arr.resources.cpus,
            "preempt_grace_s": float(la["preempt_grace_s"]),
            "max_requeue": int(la["max_requeue"]),
            "network_interface": c["cluster"]["network_interface"]}


def _analysis_doc(store: Store, sweep_dir: Path) -> dict:
    return {"analysis": True, "store": str(store.root), "sweep_dir": str(Path(sweep_dir).resolve())}


def _write_and_submit(c, store, sweep_dir, arrs, res, live, specs, site, *, arrays_dir: Path,
                      jobs_dir: Path, stem, submit):
    """Write each array's JSON and job file and submit it, in order, each depending on the ids
    `submit` returned for the arrays before it; then the analysis job (afterany all of them).
    Yields (array or None for the analysis job, job id, dependency, job file, array file) as it goes,
    so that a failure part-way leaves what went in recorded. The launcher and `r360 render` both
    go through here: render's `submit` writes submit.sh lines instead of calling sbatch."""
    logs = logs_dir(sweep_dir)
    logs.mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    jobs = [(arr, stem(i, arr.name), arr.resources, arr.array_spec) for i, arr in enumerate(arrs)]
    if arrs:
        jobs.append((None, stem(len(arrs), "analysis"), res["analysis"], None))
    for arr, name, r, spec in jobs:
        afile = arrays_dir / f"{name}.json"
        atomic.write_json(afile, _analysis_doc(store, sweep_dir) if arr is None
                          else array_file_doc(c, store, sweep_dir, arr, specs))
        sfile = jobs_dir / f"{name}.sbatch"
        atomic.write_text(sfile, sbatch.script(site, name=sbatch.job_name(c, "analysis" if arr is None else arr.name),
                                               res=r, array=spec, log_dir=logs,
                                               argv=sbatch.job_argv(site, afile)))
        if arr is None:
            after = list(ids.values()) + sorted({ref.split("_")[0] for ref in live.values()})
            dep = "afterany:" + ":".join(after) if after else ""
        else:
            dep = arr.dependency(ids)
        jid = submit("analysis" if arr is None else arr.name, sfile, dep)
        if arr is not None:
            ids[arr.name] = jid
        yield arr, jid, dep, sfile, afile


def _submit_all(c, plan, store, sweep_dir, arrs, res, live, specs, jobs, site):
    folder = logs_dir(sweep_dir)
    seq = len(jobs.submissions)
    records: list[dict] = []
    analysis = None
    err = None
    try:
        for arr, jid, dep, sfile, afile in _write_and_submit(
                c, store, sweep_dir, arrs, res, live, specs, site,
                arrays_dir=slurm_dir(sweep_dir) / "arrays", jobs_dir=slurm_dir(sweep_dir) / "sbatch",
                stem=lambda i, name: f"{seq:03d}-{name}", submit=lambda name, path, dep: sbatch.submit(path, dep)):
            if arr is None:
                analysis = {"job_id": jid, "dependency": dep, "sbatch": str(sfile), "logs": str(folder),
                            "submitted": time.time()}
                continue
            for t, sid in arr.tasks.items():
                try:
                    store.stage(sid).note_job(f"{jid}_{t}", sweep_dir)
                except OSError:
                    pass
            records.append({"name": arr.name, "job_id": jid, "role": arr.role, "kind": arr.kind,
                            "chunk": arr.chunk, "offset": arr.offset,
                            "tasks": {str(t): s for t, s in sorted(arr.tasks.items())},
                            "array": arr.array_spec, "dependency": dep, "sbatch": str(sfile),
                            "array_file": str(afile), "logs": str(folder),
                            "resources": arr.resources.describe(), "submitted": time.time(),
                            "totals": _totals(arr, specs)})
    except Exception as e:   # record what went in; the rerun submits the rest
        err = f"submission stopped: {type(e).__name__}: {e}"
    return records, analysis, err


def _totals(arr: arrays_mod.Array, specs: dict[str, tuple[dict, dict]]) -> dict[str, int]:
    """Total steps of the stages of an array (what `r360 status` shows as step/total)."""
    kind = stages.get(arr.kind)
    out = {}
    for sid in arr.tasks.values():
        total = kind.total_steps(specs[sid][0])
        if total is not None:
            out[sid] = int(total)
    return out


def _nothing_to_do(c, plan, store, sweep_dir, done, live, console) -> None:
    if len(done) == len(plan.stages):
        from reasoning360.launchers.base import write_results
        from reasoning360.sweep import results

        rows = write_results(plan, store, Path(sweep_dir))
        console.print(results.render(rows, title=f"{c['sweep']['name']}: results"))
        console.print(f"every stage is done; wrote {Path(sweep_dir) / 'results.csv'}", highlight=False)
    else:
        console.print(f"nothing to submit: {len(done)} stage(s) done, {len(live)} queued or running; "
                      f"r360 status {sweep_dir}", highlight=False)


def print_plan(c, plan, arrs, res, done, live, console, max_arr) -> None:
    from rich.table import Table

    by_role: dict[str, set] = {}
    for pp in plan.points:
        for r, sid in pp.stages.items():
            by_role.setdefault(r, set()).add(sid)
    t = Table(title=f"plan {c['sweep']['name']}: {len(plan.points)} points, {len(plan.stages)} stages "
                    f"(MaxArraySize {max_arr})")
    for col in ("stage", "unique", "done", "queued", "to submit"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    todo_all = {s for a in arrs for s in a.tasks.values()}
    for r in stages.role_names():
        sids = by_role.get(r, set())
        if sids:
            t.add_row(r, str(len(sids)), str(len(sids & done)), str(len(sids & set(live))),
                      str(len(sids & todo_all)))
    console.print(t)
    a = Table(title="arrays (submission order)")
    for col in ("array", "tasks", "ids %throttle", "resources", "depends on", "GPU-h"):
        a.add_column(col)
    gpu_h = 0.0
    for arr in arrs:
        g = len(arr.tasks) * arr.resources.gpu_hours
        gpu_h += g
        a.add_row(arr.name, str(len(arr.tasks)), _short(arr.array_spec), arr.resources.describe(),
                  arr.describe_deps() + (f" (coarsened {arr.coarsened})" if arr.coarsened else ""),
                  f"{g:.1f}")
    if arrs:
        an = res["analysis"]
        a.add_row("analysis", "1", "-", an.describe(), "afterany all arrays", f"{an.gpu_hours:.1f}")
        gpu_h += an.gpu_hours
    console.print(a)
    cpu_h = sum(len(x.tasks) * x.resources.nodes * x.resources.cpus * x.resources.time_minutes / 60 for x in arrs)
    console.print(f"requested (time limits x resources): {gpu_h:.1f} GPU-hours, {cpu_h:.1f} CPU-hours; "
                  f"{len(arrs)} array(s), {sum(len(x.tasks) for x in arrs)} task(s)", highlight=False)
    _print_engine_commands(c, plan, console)
    console.print("dry run: nothing submitted", highlight=False)


def _print_engine_commands(c, plan, console) -> None:
    """For verl stages: the exact command line of one stage per kind (each stage writes its
    own to verl_cmd.sh when it runs)."""
    if not str(c["engine"]["name"]).startswith("verl"):
        return
    import shlex

    from reasoning360.engines.verl import dry_run_commands

    cmds = dry_run_commands(plan, c["paths"]["store"])
    shown: set[str] = set()
    for sid, cmd in cmds.items():
        kind = plan.stages[sid].kind
        if kind in shown:
            continue
        shown.add(kind)
        console.print(f"[bold]{kind}[/] ({sid}, 1 of {sum(plan.stages[s].kind == kind for s in cmds)}):",
                      highlight=False)
        console.print(shlex.join(cmd), highlight=False, soft_wrap=True)


def _short(s: str, n: int = 28) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def render(c, plan, store, sweep_dir, arrs, res, live, specs, site) -> Path:
    """Write the job files the launcher would submit now (the same code writes both), and
    submit.sh that submits them in order with the same dependencies and flags."""
    out = slurm_dir(sweep_dir) / "render"
    lines = ["#!/usr/bin/env bash",
             f"# Submit sweep {c['sweep']['name']} by hand: the arrays `python sweep.py launcher=slurm`",
             "# would submit now, in order, with the same dependencies. Job ids are captured as they come;",
             "# the jobs start in the directory you run this from, as the launcher's do.",
             "set -euo pipefail", f"mkdir -p {shlex.quote(str(logs_dir(sweep_dir)))}"]

    def script_line(name: str, path: Path, dep: str) -> str:
        var = "J_" + name.replace("-", "_")
        lines.append(f"{var}=$({sbatch.shell_command(path, dep)}); {var}=${{{var}%%;*}}; "
                     f"echo \"{name}: ${var}\"")
        return "${%s}" % var

    for _ in _write_and_submit(c, store, sweep_dir, arrs, res, live, specs, site,
                               arrays_dir=out / "arrays", jobs_dir=out,
                               stem=lambda i, name: name if name == "analysis" else f"{i:02d}-{name}",
                               submit=script_line):
        pass
    atomic.write_text(out / "submit.sh", "\n".join(lines) + "\n")
    os.chmod(out / "submit.sh", 0o755)
    return out
