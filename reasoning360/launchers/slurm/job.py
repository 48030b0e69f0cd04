"""What a Slurm job runs: `python -m reasoning360.launchers.slurm.job ARRAY.json [--task N]`
(or `--analysis SWEEP_DIR`; the templates in slurm/ run the same).

ARRAY.json (written by the launcher or `r360 render`) names the store and maps array task
ids to stage ids; the task id comes from SLURM_ARRAY_TASK_ID (or --task when run by hand).
One task per node: rank 0 runs the stage, other ranks only host Ray workers.

Signals (the preemption flow):
  * USR2 (Slurm sends it `launcher.signal_delay_s` before the time limit, or on preemption
    with `scancel --signal=USR2`): we do NOT checkpoint and exit from inside the signal
    handler, because that would stop the engine mid-step. Our handler
    only sets `ctx.preempt.requested`; the engine finishes its step, saves a checkpoint and
    raises `Preempted` (the runner records the attempt); we tear Ray down and requeue the
    task (`scontrol requeue <job>_<task>`, reasoning360.launchers.slurm.sbatch.requeue), then exit.
    The requeued task resumes from that checkpoint; the Tracker truncates metrics rows past
    it, so no step is logged twice. A stage that does not reach a step boundary within
    `launcher.preempt_grace_s` (data, traces, eval) is interrupted and requeued anyway.
  * TERM (scancel, or the time limit itself): raised as KeyboardInterrupt in the main thread,
    so the runner records the attempt as interrupted, the `with RayCluster` block kills Ray
    by PID, and the job exits 143.
  * Node loss (several nodes): the Ray bootstrap's watchdog names a node whose step died or
    went silent and raises NodeLost in rank 0 at once; the job is requeued like a preemption,
    or, past `launcher.max_requeue`, the stage is marked failed with the node's name and why
    (what `r360 status` shows) and the job cancels itself rather than wait for Slurm to notice
    the node (SlurmdTimeout) and requeue it regardless.
Requeues are capped at `launcher.max_requeue` (SLURM_RESTART_COUNT).
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _log(msg: str) -> None:
    print(f"[r360 job {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Signals:
    """USR2 -> preempt flag (then a forced interrupt after a grace period); TERM -> KeyboardInterrupt."""

    def __init__(self, grace_s: float):
        from reasoning360.engines.context import PreemptFlag

        self.flag = PreemptFlag()
        self.grace_s = grace_s
        self.usr2_at: float | None = None
        self.terminated = False
        self.forced = False

    def install(self) -> None:
        signal.signal(signal.SIGUSR2, self._usr2)
        signal.signal(signal.SIGTERM, self._term)

    def _usr2(self, signum, frame) -> None:
        if self.usr2_at is not None:
            return
        self.usr2_at = time.time()
        self.flag.request()
        _log(f"USR2: checkpoint at the next step boundary, then requeue (grace {self.grace_s:.0f}s)")
        t = threading.Timer(self.grace_s, self._force)
        t.daemon = True
        t.start()

    def _force(self) -> None:
        if not self.terminated:
            self.forced = True
            _thread.interrupt_main()

    def _term(self, signum, frame) -> None:
        if self.terminated:
            return
        self.terminated = True
        raise KeyboardInterrupt("SIGTERM")


def run_analysis(doc: dict) -> int:
    """The sweep's analysis job: results.csv, then (sweep.report) `r360 report`."""
    from reasoning360.launchers.base import run_report, write_results
    from reasoning360.sweep import sweepdir

    sweep = Path(doc["sweep_dir"])
    plan, store, c = sweepdir.load(sweep)
    rows = write_results(plan, store, sweep)
    _log(f"wrote {sweep / 'results.csv'}: {sum(r['state'] == 'done' for r in rows)}/{len(rows)} points done")
    if not c["sweep"]["report"]:
        return 0
    _log(f"r360 report {sweep}")
    return run_report(sweep)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reasoning360.launchers.slurm.job")
    ap.add_argument("array_file", nargs="?")
    ap.add_argument("--task", type=int, default=None, help="task id (default: SLURM_ARRAY_TASK_ID)")
    ap.add_argument("--analysis", metavar="SWEEP_DIR", help="write the sweep's results (the analysis job)")
    args = ap.parse_args(argv)
    if args.analysis:
        return run_analysis({"sweep_dir": args.analysis})
    if not args.array_file:
        ap.error("ARRAY.json (or --analysis SWEEP_DIR) is required")
    doc = json.loads(Path(args.array_file).read_text())
    if doc.get("analysis"):
        return run_analysis(doc)
    tid = args.task if args.task is not None else int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    return run_task(doc, tid)


def run_task(doc: dict, tid: int) -> int:
    """Run task `tid` of an array document on this rank; the process exit code."""
    from reasoning360.engines.context import Preempted
    from reasoning360.sweep.store import Store
    from reasoning360.ray.bootstrap import NodeLost, RayCluster

    sid = doc["tasks"][str(tid)]
    role, kind = doc["role"], doc["kind"]
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "local")
    key = f"{job_id}_{tid}" if os.environ.get("SLURM_ARRAY_JOB_ID") else str(job_id)
    hosts = _hosts()
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    store = Store(doc["store"])
    if rank == 0:
        _log(f"{role} {sid} (job {key}, rank {rank}/{len(hosts)}, host {socket.gethostname()}, "
             f"restart {restarts}) -> {store.stage(sid).path}")
    sig = Signals(float(doc["preempt_grace_s"]))        # 0: no grace, interrupt at once
    sig.install()
    cluster = None
    if doc.get("ray"):
        # one shared dir per job and run: a requeued run never reads the head of the previous one
        cluster = RayCluster(key=key, rank=rank, hosts=hosts,
                             shared_dir=Path(doc["sweep_dir"]) / "slurm" / "ray" / key / f"run{restarts}",
                             num_cpus=int(os.environ.get("SLURM_CPUS_PER_TASK") or doc.get("cpus") or 1),
                             num_gpus=int(doc.get("gpus") or 0), interface=doc.get("network_interface"),
                             join_timeout_s=float(doc.get("ray_join_timeout_s") or 180),
                             driver_cpus=int(doc["driver_cpus"]))   # the stage's own process, on the head
    if rank > 0:
        if cluster is None:
            return 0
        # preemption (USR2) is rank 0's to handle: it checkpoints, then releases or requeues
        # the whole job; a rank > 0 that acted on its own would look like a lost node
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        try:
            with cluster:
                cluster.wait_released()
        except KeyboardInterrupt:
            return 143
        if cluster.head_lost:
            _log(f"rank {rank} on {socket.gethostname()}: the head is lost ({cluster.head_lost}); leaving")
            return 1
        return 0

    t0 = time.time()
    try:
        if _wait_if_busy(store, sid):        # another job (another sweep sharing it) finished it
            _log(f"{sid} was completed by another job; nothing to do")
            return 0
        with (cluster if cluster is not None else contextlib.nullcontext()):
            sig.install()            # ray.init() replaces the SIGTERM handler
            summary = _run(store, sid, sig)
        _log(f"done in {time.time() - t0:.1f}s: {json.dumps(summary, sort_keys=True, default=str)[:400]}")
        return 0
    except Preempted as e:
        _log(f"preempted: {e}")
        return _requeue(doc, store, sid, restarts)
    except KeyboardInterrupt as e:
        lost = e if isinstance(e, NodeLost) else (cluster.lost if cluster is not None else None)
        if lost is not None and not lost.terminated and not sig.terminated:   # (ray.get re-raises
            return _node_lost(doc, store, sid, restarts, lost)        # NodeLost as a plain interrupt)
        if sig.usr2_at is not None and not sig.terminated:
            _log("USR2 grace period over: interrupted without a step-boundary checkpoint")
            return _requeue(doc, store, sid, restarts)
        sig.terminated = True       # (another rank's SIGTERM may have reached us first)
        _log("terminated (SIGTERM): Ray stopped, stage left resumable")
        if cluster is not None:     # skip Ray's atexit hooks: its processes are gone already
            sys.stdout.flush()
            os._exit(143)
        return 143
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        if cluster is not None and cluster.lost is not None and not cluster.lost.terminated \
                and not sig.terminated:                          # it failed because a node died
            return _node_lost(doc, store, sid, restarts, cluster.lost)
        return 1


def _run(store, sid: str, sig: Signals) -> dict:
    from reasoning360.sweep.runner import run_stage
    from reasoning360.sweep.store import StageBusy

    while True:
        try:
            return run_stage(store, sid, show_progress=False, preempt=sig.flag)
        except StageBusy:      # taken between our check and our lock: wait for it again
            if _wait_if_busy(store, sid):
                return store.stage(sid).summary()


def _wait_if_busy(store, sid: str, poll_s: float = 5.0) -> bool:
    """If another process holds the stage (a job of another sweep that shares this stage), wait
    until it lets go; True if the stage is then DONE."""
    sd = store.stage(sid)
    if not sd.is_locked():
        return sd.is_done()
    _log(f"{sid} is being run by another job; waiting for it instead of running it twice")
    while sd.is_locked():
        time.sleep(poll_s)
    return sd.is_done()


def _hosts() -> list[str]:
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return [socket.gethostname()]
    from reasoning360.launchers.slurm.query import expand_nodelist

    return expand_nodelist(nodelist)


def _node_lost(doc: dict, store, sid: str, restarts: int, err) -> int:
    """Another node of the job is gone (its step died, or it went silent): requeue the job per
    launcher.max_requeue, else mark the stage failed with the node's name and end the job now.
    Slurm would otherwise keep it until SlurmdTimeout, then requeue it on its own terms."""
    _log(f"{err}")
    limit = int(doc["max_requeue"])
    if restarts < limit and os.environ.get("SLURM_JOB_ID"):
        return _requeue(doc, store, sid, restarts)
    msg = (f"{err}; not requeued (restart {restarts}, launcher.max_requeue={limit}); "
           "resubmit with r360 resubmit --failed")
    store.stage(sid).give_up(msg)
    _log(msg)
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        import subprocess

        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # scancel signals this step too
        sys.stdout.flush()
        subprocess.run(["scancel", job], capture_output=True, timeout=60)
    return 1


def _requeue(doc: dict, store, sid: str, restarts: int) -> int:
    """Requeue this task (`scontrol requeue <job>_<task>`) unless it has been requeued
    launcher.max_requeue times already (0: never requeue; the stage is marked failed)."""
    limit = int(doc["max_requeue"])
    if restarts >= limit:
        msg = (f"not requeued: preempted or timed out {restarts + 1} time(s) "
               f"(launcher.max_requeue={limit}); resubmit with r360 resubmit --failed")
        store.stage(sid).give_up(msg)
        _log(msg)
        return 1
    if not os.environ.get("SLURM_JOB_ID"):
        _log("preempted outside Slurm: rerun to resume")
        return 3
    from reasoning360.launchers.slurm.sbatch import job_ref, requeue

    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the requeue itself signals this step
    ref = job_ref(os.environ)
    requeue(ref)
    _log(f"requeued {ref} (restart {restarts + 1}/{limit}); it resumes from its checkpoint")
    return 255


if __name__ == "__main__":
    sys.exit(main())
