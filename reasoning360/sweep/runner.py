"""Run one stage in this process: the unit of work of every launcher.

`python -m reasoning360.sweep.runner STORE STAGE_ID` is what the local pool's children and
Slurm jobs execute. A DONE stage returns its summary at once; a partial one resumes from its
last checkpoint; a stage that another process is running is refused (StageBusy) rather than
run twice. Its kind's code (reasoning360.stages) does the work; this module only keeps the
books through StageDir: lock, attempt start and end, FAILED, summary, DONE.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from typing import Any

from .. import stages
from ..engines.context import PreemptFlag, Preempted, StageContext
from ..tracking import Tracker
from .store import StageBusy, Store


class DependencyMissing(RuntimeError):
    """An upstream stage is not DONE."""


def run_stage(store: Store, stage_id: str, *, show_progress: bool = True,
              preempt: PreemptFlag | None = None, runtime_overrides: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    sd = store.stage(stage_id)
    if sd.is_done():
        return sd.summary()
    rec = sd.record()
    spec, runtime = rec["spec"], {**(rec.get("runtime") or {}), **(runtime_overrides or {})}
    kind = stages.get(spec["kind"])
    deps = {}
    for role, dep in kind.deps_of(spec).items():
        if not store.stage(dep).is_done():
            raise DependencyMissing(f"{stage_id}: upstream stage {dep} is not done")
        deps[role] = store.stage(dep).path
    run_name, group = runtime["run_name"], runtime["group"]
    label = spec["kind"]
    if label == "eval":   # name evals by what they evaluate: eval-sft, eval-rl, eval-base
        label = "eval-" + (spec["checkpoint"].split("-")[0] if spec.get("checkpoint") else "base")

    def make_tracker(resume_step: int) -> Tracker:
        return Tracker(sd.path, resume_step=resume_step, wandb_cfg=runtime["tracking"],
                       run_name=f"{run_name}/{label}", group=group,
                       config={"spec": spec, "stage_id": stage_id})

    ctx = StageContext(stage_dir=sd.path, spec=spec, runtime={**runtime, "show_progress": show_progress},
                       deps=deps, make_tracker=make_tracker, preempt=preempt or PreemptFlag(),
                       show_progress=show_progress)
    with sd.lock():
        if sd.is_done():           # finished by another process while we waited for nothing
            return sd.summary()
        t0 = time.time()
        attempt = sd.begin_attempt(runtime.get("threads"))
        try:
            summary = kind.runner()(ctx)
        except Preempted:
            sd.end_attempt(attempt, "preempted", t0)
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                sd.end_attempt(attempt, "cancelled", t0)
            else:
                sd.mark_failed(traceback.format_exc())
                sd.end_attempt(attempt, "failed", t0)
            raise
        attempts = sd.end_attempt(attempt, "done", t0)
        summary = {**summary, "wall_s": sum(a.get("seconds", 0.0) for a in attempts), "stage_id": stage_id}
        sd.mark_done(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m reasoning360.sweep.runner STORE STAGE_ID [--threads N]`: one stage in this
    process. USR2 asks it to checkpoint at the next step boundary and stop (exit 3)."""
    import argparse

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # effective only before torch loads
    ap = argparse.ArgumentParser(prog="python -m reasoning360.sweep.runner")
    ap.add_argument("store")
    ap.add_argument("stage_id")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (overrides the stage's runtime)")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    preempt = PreemptFlag()
    signal.signal(signal.SIGUSR2, preempt.request)
    try:
        summary = run_stage(Store(a.store), a.stage_id, show_progress=sys.stdout.isatty(), preempt=preempt,
                            runtime_overrides=None if a.threads is None else {"threads": a.threads})
    except Preempted:
        print(f"{a.stage_id}: checkpointed and stopped; run it again to resume", flush=True)
        return 3
    except StageBusy as e:
        print(str(e), file=sys.stderr)
        return 4
    print(json.dumps(summary, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
