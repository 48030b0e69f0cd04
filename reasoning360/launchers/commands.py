"""`r360 status | watch | logs | cancel | resubmit | render SWEEP ...`

SWEEP is a sweep directory or a sweep name under $R360_ROOT/sweeps. Every command reads the
sweep back from its directory (plan.json, sweep.yaml, jobs.json) and the store, so it works
from any shell, long after `python sweep.py` returned.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from reasoning360 import stages
from reasoning360.sweep import sweepdir


def _sweep(name: str) -> Path:
    return sweepdir.resolve(name)


def _err(console: Console, e: Exception) -> int:
    console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    return 2


# --------------------------------------------------------------------------- status / watch


def configure_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep directory or name")
    p.add_argument("--json", action="store_true", help="machine-readable rows")
    p.add_argument("--plain", action="store_true", help="plain text table (default when not a terminal)")
    p.add_argument("--active", action="store_true", help="only stages that are not done")


def cmd_status(args) -> int:
    from reasoning360.launchers import status

    console = Console()
    try:
        snap = status.snapshot(_sweep(args.sweep))
    except (sweepdir.SweepDirError, FileNotFoundError) as e:
        return _err(console, e)
    if args.active:
        snap.rows = [r for r in snap.rows if r.state != "done"]
    if args.json:
        print(snap.to_json())
    elif args.plain or not sys.stdout.isatty() or len(snap.rows) > 400:
        print(status.plain(snap))
    else:
        console.print(status.table(snap))
    return 1 if snap.counts.get("failed") else 0


def configure_watch(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep directory or name")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    p.add_argument("--exit", action="store_true", help="return once nothing is pending or running")


def cmd_watch(args) -> int:
    from rich.live import Live

    from reasoning360.launchers import status

    console = Console()
    try:
        sweep = _sweep(args.sweep)
        snap = status.snapshot(sweep)
    except (sweepdir.SweepDirError, FileNotFoundError) as e:
        return _err(console, e)

    def view(s):
        # what fits: every row of small sweeps; otherwise the rows that are not done
        rows = s.rows
        room = max(5, console.size.height - 8)
        if len(rows) > room:
            rows = [r for r in rows if r.state != "done"][:room]
        return status.table(s, rows, title=status.summary_line(s) + f"  (every {args.interval:g}s, Ctrl-C to quit)")

    try:
        with Live(view(snap), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                if args.exit and not (snap.counts.get("running") or snap.counts.get("pending")):
                    break
                time.sleep(args.interval)
                snap = status.snapshot(sweep)
                live.update(view(snap))
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- logs


def configure_logs(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep directory or name")
    p.add_argument("point", help="grid point name (as in r360 status) or its index")
    p.add_argument("--stage", choices=stages.role_names(), default=None,
                   help="stage role (default: the first that is not done, else the last)")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines of log to show")


def cmd_logs(args) -> int:
    from reasoning360.launchers.slurm.jobs import JobsFile
    from reasoning360.launchers.slurm.sbatch import log_path

    console = Console()
    try:
        sweep = _sweep(args.sweep)
        plan, store, _ = sweepdir.load(sweep)
    except sweepdir.SweepDirError as e:
        return _err(console, e)
    names = [pp.name for pp in plan.points]
    if args.point in names:
        pp = plan.points[names.index(args.point)]
    elif args.point.isdigit() and int(args.point) < len(names):
        pp = plan.points[int(args.point)]
    else:
        close = [n for n in names if args.point in n][:5]
        return _err(console, ValueError(f"no point {args.point!r} in {sweep.name}"
                                        + (f" (did you mean {', '.join(close)}?)" if close else "")))
    role = args.stage
    if role is None:
        roles = list(pp.stages)
        role = next((r for r in roles if not store.stage(pp.stages[r]).is_done()), roles[-1])
    if role not in pp.stages:
        return _err(console, ValueError(f"point {pp.name} has no {role} stage (it has: {', '.join(pp.stages)})"))
    sid = pp.stages[role]
    sd = store.stage(sid)
    console.print(f"[bold]{pp.name}[/] {role}: {sid}  ({sd.path})", highlight=False)
    jobs = JobsFile(sweep)
    refs = jobs.stage_refs().get(sid, [])
    if refs:
        ref, arr = refs[-1]
        jid, _, tid = ref.partition("_")
        path = log_path(Path(arr.get("logs") or sweep / "slurm" / "logs"), jid, int(tid))
        console.print(f"job {ref} (submission {len(refs)} of {len(refs)}): {path}", highlight=False)
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()
            print("\n".join(lines[-args.lines:]))
        else:
            console.print("[dim](no log yet: the job has not started)[/]")
    else:
        console.print("[dim](no Slurm job recorded for this stage: a local run, or never submitted)[/]")
        for a in sd.attempts():
            print(json.dumps(a, sort_keys=True))
    failure = sd.failure()
    if failure:
        console.print("[bold red]FAILED[/] (traceback written by the runner):", highlight=False)
        print(failure.rstrip())
    elif sd.is_done():
        console.print("[green]DONE[/]", highlight=False)
    return 0


# --------------------------------------------------------------------------- cancel


def configure_cancel(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep directory or name")


def cmd_cancel(args) -> int:
    """The sweep's own launcher stops what it started (slurm: scancel its jobs; local: Ctrl-C
    once to the process running it)."""
    from reasoning360.launchers import get_launcher

    console = Console()
    try:
        sweep = _sweep(args.sweep)
        _, _, c = sweepdir.load(sweep)
    except sweepdir.SweepDirError as e:
        return _err(console, e)
    return get_launcher(c["launcher"]["name"]).cancel(sweep, console)


# --------------------------------------------------------------------------- resubmit / render


def configure_resubmit(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep directory or name")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--failed", action="store_true",
                   help="failed and interrupted stages, and what depends on them")
    g.add_argument("--all-missing", action="store_true", help="every stage that is neither DONE nor queued")
    p.add_argument("--dry-run", action="store_true", help="print the arrays, submit nothing")


def _config(sweep: Path) -> dict:
    plan, store, c = sweepdir.load(sweep)
    if not c:
        raise sweepdir.SweepDirError(f"{sweep}: no sweep.yaml")
    if (c.get("launcher") or {}).get("name") != "slurm":
        c = _with_slurm_defaults(c)
    return c


def _with_slurm_defaults(c: dict) -> dict:
    """A sweep recorded with launcher=local, resubmitted to Slurm: use configs/launcher/slurm.yaml."""
    import yaml

    from reasoning360.sweep.grid import CONFIGS

    la = yaml.safe_load((CONFIGS / "launcher" / "slurm.yaml").read_text())
    return {**c, "launcher": la}


def _load_for_slurm(args, console: Console):
    """(sweep dir, plan, store, config with the Slurm launcher's settings), or an exit code."""
    try:
        sweep = _sweep(args.sweep)
        plan, store, _ = sweepdir.load(sweep)
        return sweep, plan, store, _config(sweep)
    except sweepdir.SweepDirError as e:
        return _err(console, e)


def cmd_resubmit(args) -> int:
    from reasoning360.launchers import status
    from reasoning360.launchers.slurm import submit

    console = Console()
    loaded = _load_for_slurm(args, console)
    if isinstance(loaded, int):
        return loaded
    sweep, plan, store, c = loaded
    only = None
    if args.failed:
        snap = status.snapshot(sweep)
        bad = {r.stage_id for r in snap.rows if r.state in ("failed", "interrupted")}
        only = {s for s in _downstream(plan, bad) if not store.stage(s).is_done()}
        if not only:
            console.print("nothing failed: no stage to resubmit")
            return 0
    c = {**c, "sweep": {**c["sweep"], "dry_run": bool(args.dry_run)}}
    return submit.launch(c, plan, store, sweep, console, only=only,
                         mode="dry_run" if args.dry_run else "launch",
                         note="resubmit --failed" if args.failed else "resubmit --all-missing")


def _downstream(plan, roots: set[str]) -> set[str]:
    rev = plan.children()
    out, stack = set(), list(roots)
    while stack:
        s = stack.pop()
        if s in out:
            continue
        out.add(s)
        stack += rev.get(s, ())
    return out


def configure_render(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep directory or name")


def cmd_render(args) -> int:
    from reasoning360.launchers.slurm import submit

    console = Console()
    loaded = _load_for_slurm(args, console)
    if isinstance(loaded, int):
        return loaded
    sweep, plan, store, c = loaded
    rc = submit.launch(c, plan, store, sweep, console, mode="render")
    if rc == 0:
        out = submit.slurm_dir(sweep) / "render"
        for f in sorted(out.glob("*.sbatch")):
            console.print(f"  {f}", highlight=False)
        console.print(f"submit them by hand with: bash {out / 'submit.sh'}", highlight=False)
    return rc
