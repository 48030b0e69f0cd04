"""Launchers turn a recorded plan into running stages: `local` on this machine, `slurm` as job
arrays. Peers behind one interface (base.Launcher), found by name in a lazy registry; a new
launcher is one module with a Launcher subclass plus one line in LAUNCHERS.

    local.py, pool.py   run stages here, `launcher.workers` at a time, each in its own process
    slurm/              site profiles and resources, arrays, sbatch files, submission, the job
                        body, squeue/sacct, status, and the local test clusters (localslurm/)

`run_sweep(cfg)` is what `python sweep.py` does: resolve, validate, plan (reasoning360.sweep),
let the launcher refuse what it cannot run, record the sweep, launch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .base import LaunchError, Launcher

LAUNCHERS: dict[str, str] = {
    "local": "reasoning360.launchers.local:LocalLauncher",
    "slurm": "reasoning360.launchers.slurm:SlurmLauncher",
}


def get_launcher(name: str) -> Launcher:
    if name not in LAUNCHERS:
        raise LaunchError(f"launcher.name: unknown launcher {name!r} (known: {', '.join(LAUNCHERS)})")
    module, cls = LAUNCHERS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def run_sweep(cfg: Any, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Compose -> validate -> plan -> the launcher's own checks -> record -> launch. Every error in
    the input is one line, printed before anything is written or submitted (exit code 2); so is
    an override (of `overrides`, the command line's) that nothing in this sweep reads."""
    from rich.console import Console

    from ..sweep import sweepdir
    from ..sweep.contract import refuse_inert
    from ..sweep.grid import GridError
    from ..sweep.main import build, record

    # In a log file (Slurm, nohup) rich would wrap tables at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        c, plan, store, sweep_dir = build(cfg)
        launcher = get_launcher(c["launcher"]["name"])
        refuse_inert(c, list(overrides), launcher.reads)
        launcher.validate(c, plan)
        if not c["sweep"]["dry_run"]:
            record(c, plan, store, sweep_dir)
    except (GridError, LaunchError, sweepdir.SweepDirError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    return launcher.launch(c, plan, store, sweep_dir, console)


__all__ = ["LAUNCHERS", "Launcher", "LaunchError", "get_launcher", "run_sweep"]
