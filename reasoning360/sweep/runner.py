"""Run one stage in this process: the unit of work of every launcher.

`python -m reasoning360.sweep.runner STORE STAGE_ID` is what a Slurm job executes; the
local launcher calls `run_stage` directly. A DONE stage returns its summary at once; a
partial one resumes from its last checkpoint; a stage that another process is running
is refused rather than run twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .. import atomic
from ..cores import usable_cores
from ..engines.context import PreemptFlag, Preempted, StageContext
from ..tracking import Tracker
from .graph import deps_of
from .store import Store

ATTEMPTS = "attempts.jsonl"


class StageBusy(RuntimeError):
    """Another process holds the stage's lock."""


class DependencyMissing(RuntimeError):
    """An upstream stage is not DONE."""


def _data(ctx: StageContext) -> dict:
    from ..tasks import build_data
    return build_data(ctx.spec, ctx.stage_dir, show_progress=ctx.show_progress)


def _traces(ctx: StageContext) -> dict:
    from ..tasks import build_traces
    return build_traces(ctx.spec, ctx.deps["data"], ctx.stage_dir, show_progress=ctx.show_progress)


def _distill(ctx: StageContext) -> dict:
    from ..stages.distill import run_distill
    return run_distill(ctx)


def _engine(ctx: StageContext):
    name = ctx.spec["engine"]
    if name == "local":
        from ..engines import local
        return local
    if name.startswith("verl"):
        from ..engines import verl  # optional extra: imported only when asked for
        return verl
    raise ValueError(f"engine.name: unknown engine {name!r}")


RUNNERS: dict[str, Callable[[StageContext], dict]] = {
    "data": _data,
    "traces": _traces,
    "distill": _distill,
    "sft": lambda ctx: _engine(ctx).run_sft(ctx),
    "rl": lambda ctx: _engine(ctx).run_grpo(ctx),
    "eval": lambda ctx: _engine(ctx).run_eval(ctx),
}


def run_stage(store: Store, stage_id: str, *, show_progress: bool = True,
              preempt: PreemptFlag | None = None, runtime_overrides: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    sd = store.stage(stage_id)
    if sd.is_done():
        return sd.summary()
    spec, runtime = store.load(stage_id)
    runtime = {**runtime, **(runtime_overrides or {})}
    deps = {}
    for role, dep in deps_of(spec).items():
        if not store.stage(dep).is_done():
            raise DependencyMissing(f"{stage_id}: upstream stage {dep} is not done")
        deps[role] = store.stage(dep).path
    run_name, group = runtime.get("run_name", stage_id), runtime.get("group", "")
    label = spec["kind"]
    if label == "eval":   # name evals by what they evaluate: eval-sft, eval-rl, eval-base
        label = "eval-" + (spec["checkpoint"].split("-")[0] if spec.get("checkpoint") else "base")

    def make_tracker(resume_step: int) -> Tracker:
        return Tracker(sd.path, resume_step=resume_step, wandb_cfg=runtime.get("tracking"),
                       run_name=f"{run_name}/{label}", group=group,
                       config={"spec": spec, "stage_id": stage_id})

    ctx = StageContext(stage_dir=sd.path, spec=spec, runtime={**runtime, "show_progress": show_progress},
                       deps=deps, make_tracker=make_tracker, preempt=preempt or PreemptFlag(),
                       show_progress=show_progress)
    with _lock(sd.path):
        if sd.is_done():           # finished by someone else while we waited for nothing
            return sd.summary()
        t0 = time.time()
        try:
            summary = RUNNERS[spec["kind"]](ctx)
        except Preempted:
            _record_attempt(sd.path, t0, "preempted")
            raise
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            _record_attempt(sd.path, t0, status)
            if status == "failed":
                sd.mark_failed(traceback.format_exc())
            raise
        attempts = _record_attempt(sd.path, t0, "done")
        summary = {**summary, "wall_s": sum(a["seconds"] for a in attempts), "stage_id": stage_id}
        sd.mark_done(summary)
    return summary


def _record_attempt(path: Path, t0: float, status: str) -> list[dict]:
    file = path / ATTEMPTS
    rows = [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []
    rows.append({"start": t0, "seconds": round(time.time() - t0, 3), "status": status,
                 "job": os.environ.get("SLURM_JOB_ID"), "host": os.uname().nodename})
    atomic.write_jsonl(file, rows)
    return rows


class _lock:
    """An exclusive flock on the stage directory, so two launchers never run one stage."""

    def __init__(self, path: Path):
        self.path = path / ".lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise StageBusy(f"stage {self.path.parent.name} is being run by another process")
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _use_all_cores(*_: Any) -> None:
    """USR1 from the local pool: this stage now runs alone, so it may use every core."""
    import torch

    torch.set_num_threads(usable_cores())


def main(argv: list[str] | None = None) -> int:
    """`python -m reasoning360.sweep.runner STORE STAGE_ID [--threads N]`: one stage in this
    process. USR2 asks it to checkpoint at the next step boundary and stop (exit 3); USR1 lets
    it use every core (sent when it is left running alone)."""
    import argparse

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # effective only before torch loads
    ap = argparse.ArgumentParser(prog="python -m reasoning360.sweep.runner")
    ap.add_argument("store")
    ap.add_argument("stage_id")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (overrides the stage's runtime)")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    preempt = PreemptFlag()
    signal.signal(signal.SIGUSR2, preempt.request)
    signal.signal(signal.SIGUSR1, _use_all_cores)
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
