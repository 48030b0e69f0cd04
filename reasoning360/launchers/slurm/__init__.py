"""Submit a plan to Slurm as job arrays and return at once (the modules beside this one).

One array per stage role and resource shape, chunked to MaxArraySize and throttled to
`sweep.array_parallelism`; `aftercorr` between one-to-one stages, `afterok:<job>_<task>`
on shared ones; DONE stages are skipped and queued ones (jobs.json + squeue) are not
submitted twice; an analysis job runs `afterany` the rest. `sweep.dry_run=true` prints
the arrays, their dependencies and the GPU-hours requested, and submits nothing;
`launcher.submit=false` records the sweep and writes its sbatch files (as `r360 render`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from reasoning360.sweep.plan import Plan
from reasoning360.sweep.store import Store

from ..base import LaunchError, Launcher


class SlurmLauncher(Launcher):
    name = "slurm"
    reads = ("launcher", "cluster", "paths", "sweep.name", "sweep.dry_run", "sweep.array_parallelism",
             "sweep.overwrite", "sweep.report")

    def validate(self, c: dict[str, Any], plan: Plan) -> None:
        """The site profile and every stage kind's resources, against the partition when Slurm
        answers here (`scontrol`), before anything is written."""
        from .resources import ResourceError
        from .submit import check_resources

        try:
            check_resources(c, plan, need_slurm=False)
        except ResourceError as e:
            raise LaunchError(str(e)) from None

    def launch(self, c, plan, store, sweep_dir, console) -> int:
        return launch(c, plan, store, sweep_dir, console)

    def cancel(self, sweep_dir: Path, console: Console) -> int:
        """scancel every queued or running job of the sweep (one squeue, one scancel)."""
        from . import query
        from .jobs import JobsFile

        ids = JobsFile(sweep_dir).job_ids()
        if not ids:
            console.print("nothing to cancel: no Slurm job was submitted for this sweep")
            return 0
        live = sorted({t.array_job_id for t in query.squeue(ids).values() if t.state in query.LIVE}, key=int)
        if not live:
            console.print(f"nothing to cancel: none of the sweep's {len(ids)} job(s) is queued or running")
            return 0
        query.scancel(live)
        console.print(f"cancelled {len(live)} job(s)/array(s): {' '.join(live)}", highlight=False)
        return 0


def launch(c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path, console: Console) -> int:
    from reasoning360.launchers.slurm.submit import launch as submit

    if c["sweep"].get("dry_run"):
        mode = "dry_run"
    elif not c["launcher"]["submit"]:
        mode = "render"      # record the sweep, write its sbatch files, submit nothing
    else:
        mode = "launch"
    rc = submit(c, plan, store, Path(sweep_dir), console, mode=mode)
    if mode == "render" and rc == 0:
        console.print(f"nothing submitted; submit by hand with: bash {Path(sweep_dir) / 'slurm/render/submit.sh'}",
                      highlight=False)
    return rc
