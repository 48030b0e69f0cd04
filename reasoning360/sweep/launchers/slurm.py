"""Submit a plan to Slurm as job arrays and return at once (see reasoning360/cluster/).

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

from ..graph import Plan
from ..store import Store


def launch(c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path, console: Console) -> int:
    from ...cluster.submit import launch as submit

    if c["sweep"].get("dry_run"):
        mode = "dry_run"
    elif not (c.get("launcher") or {}).get("submit", True):
        mode = "render"      # record the sweep, write its sbatch files, submit nothing
    else:
        mode = "launch"
    rc = submit(c, plan, store, Path(sweep_dir), console, mode=mode)
    if mode == "render" and rc == 0:
        console.print(f"nothing submitted; submit by hand with: bash {Path(sweep_dir) / 'slurm/render/submit.sh'}",
                      highlight=False)
    return rc
