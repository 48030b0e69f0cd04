"""The Launcher interface: how a planned sweep becomes running stages.

Launchers are peers behind one interface (as submitit's executors): `local` runs the stages on
this machine, `slurm` submits them as job arrays. The sweep entry point never tests a
launcher's name; it asks the registry (reasoning360.launchers.LAUNCHERS) for one and calls:

    validate(c, plan)   refuse, in one line naming the key, what this launcher cannot run,
                        before anything is written or submitted
    launch(c, plan, store, sweep_dir, console) -> exit code: run (local) or submit (slurm),
                        or print the plan when sweep.dry_run is set
    cancel(sweep_dir, console) -> exit code: stop what this launcher started for the sweep
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from ..sweep.plan import Plan
from ..sweep.store import Store


class LaunchError(ValueError):
    """Input a launcher cannot run (one line, names the key), found before anything is written."""


class Launcher(ABC):
    name: ClassVar[str]
    # The config keys (dotted prefixes) this launcher reads: an override of another launcher-scope
    # key (launcher.*, cluster.*, sweep.*, paths.*) would change nothing and is refused.
    reads: ClassVar[tuple[str, ...]]

    def validate(self, c: dict[str, Any], plan: Plan) -> None:
        """Raise LaunchError for what this launcher cannot run. Default: nothing to check."""

    @abstractmethod
    def launch(self, c: dict[str, Any], plan: Plan, store: Store, sweep_dir: Path, console: Console) -> int:
        """Run or submit every stage of `plan` that is not DONE; the process exit code."""

    @abstractmethod
    def cancel(self, sweep_dir: Path, console: Console) -> int:
        """Stop what this launcher started for the sweep; the process exit code."""


def write_results(plan: Plan, store: Store, sweep_dir: Path) -> list[dict[str, Any]]:
    """results.csv / results.parquet of the sweep (what every launcher leaves when it ends)."""
    from ..sweep import results

    rows = results.rows(plan, store)
    results.write(rows, Path(sweep_dir))
    return rows


def run_report(sweep_dir: Path) -> int:
    """`r360 report SWEEP` in its own process (matplotlib, pandas: kept out of the launcher)."""
    import subprocess
    import sys

    return subprocess.call([sys.executable, "-m", "reasoning360.cli", "report", str(sweep_dir)])
