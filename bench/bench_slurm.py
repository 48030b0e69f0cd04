"""Bench the Slurm launcher on the real local cluster (reasoning360/launchers/slurm/localslurm/).

    python bench/bench_slurm.py [--points 1000] [--keep]

1. plan + submit a 1,000-point grid (countdown x k in 0..3 x 250 seeds: 4,005 stages in 6
   roles) with `launcher=slurm`; report the seconds of each phase (plan, record, submit), the
   sbatch calls (counted by PATH shims around sbatch/squeue/sacct/scancel) and the array
   chunks; then run the same command again (it must submit nothing: everything is queued);
2. the same 1,000 points through hydra-submitit-launcher (`-m hydra/launcher=submitit_slurm`,
   trivial jobs), timed until its sbatch returned: the ratio;
3. `r360 status` of the 1,000-point sweep: seconds, and exactly one squeue and one sacct call.

Every job is submitted held (`--hold`) so that nothing runs, and everything submitted is
cancelled at the end (unless --keep). Each phase is reported in wall seconds and in CPU seconds
(this process and the commands it ran: sbatch ...), the figure to compare on a shared machine.
Without hydra-submitit-launcher, part 2 is skipped with what to install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SHIMMED = ("sbatch", "squeue", "sacct", "scancel")


def make_shims(d: Path, log: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name in SHIMMED:
        real = shutil.which(name)
        if real is None:
            sys.exit(f"{name} not found: start the local cluster (reasoning360/launchers/slurm/localslurm/start-slurm.sh)")
        sh = d / name
        sh.write_text(textwrap.dedent(f"""\
            #!/bin/bash
            t0=$(date +%s.%N)
            {real} "$@"; rc=$?
            echo "{name} $t0 $(date +%s.%N) $rc" >> {log}
            exit $rc
            """))
        sh.chmod(0o755)


def calls(log: Path, since: float = 0.0) -> dict[str, int]:
    out: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            name, t0, *_ = line.split()
            if float(t0) >= since:
                out[name] = out.get(name, 0) + 1
    return out


HYDRA_LAUNCHER = "hydra-submitit-launcher==1.2.0"     # requirements/constraints.txt


def have_hydra_submitit() -> bool:
    """hydra-submitit-launcher installed (its launcher module, not just the namespace)."""
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher.submitit_launcher") is not None
    except ModuleNotFoundError:
        return False


def cpu() -> float:
    """CPU seconds so far of this process and of the children it waited for (sbatch, ...)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def seeds(n: int) -> str:
    return "[" + ",".join(map(str, range(n))) + "]"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1000, help="grid points (4 k values x points/4 seeds)")
    ap.add_argument("--keep", action="store_true", help="do not cancel the submitted jobs")
    ap.add_argument("--skip-hydra", action="store_true")
    args = ap.parse_args()
    if shutil.which("sbatch") is None:
        sys.exit("Slurm is not running here: bash reasoning360/launchers/slurm/localslurm/start-slurm.sh")
    n_seeds = args.points // 4
    tmp = Path(tempfile.mkdtemp(prefix="r360-bench-"))
    log = tmp / "calls.log"
    make_shims(tmp / "shims", log)
    os.environ["PATH"] = f"{tmp / 'shims'}:{os.environ['PATH']}"
    os.environ["R360_ROOT"] = str(tmp / "root")
    overrides = ["+grid=backtrack", "grid.baselines=[]", f"grid.seeds={seeds(n_seeds)}", "launcher=slurm",
                 "sweep.name=bench", "++cluster.additional_sbatch.hold=true"]
    report: dict = {"points": n_seeds * 4}
    sweep_dir = tmp / "root" / "sweeps" / "bench"
    hydra_ids: list[str] = []
    try:
        # ---------------------------------------------------------------- 1. plan + submit
        from compose import compose_cfg
        from rich.console import Console

        from reasoning360.launchers.slurm import query as slurm_query
        from reasoning360.launchers.slurm.jobs import JobsFile
        from reasoning360.launchers.slurm.submit import launch
        from reasoning360.sweep import main as sweep_main

        t0, u0 = time.perf_counter(), cpu()
        cfg = compose_cfg(*overrides)
        t1, u1 = time.perf_counter(), cpu()
        c, plan, store, sd = sweep_main.build(cfg)
        t2, u2 = time.perf_counter(), cpu()
        sweep_main.record(c, plan, store, sd)
        t3, u3 = time.perf_counter(), cpu()
        mark = time.time()
        with open(os.devnull, "w") as devnull:
            rc = launch(c, plan, store, sd, Console(file=devnull))
        t4, u4 = time.perf_counter(), cpu()
        assert rc == 0, "submission failed"
        jobs = JobsFile(sd)
        arrays = jobs.arrays()
        n = calls(log, mark)
        report.update(stages=len(plan.stages), roles=len({a["role"] for a in arrays}), arrays=len(arrays),
                      chunks=len({(a["role"], a["chunk"], a["name"]) for a in arrays}),
                      tasks=sum(len(a["tasks"]) for a in arrays),
                      compose_s=round(t1 - t0, 2), plan_s=round(t2 - t1, 2), record_s=round(t3 - t2, 2),
                      submit_s=round(t4 - t3, 2), total_s=round(t4 - t0, 2),
                      compose_cpu_s=round(u1 - u0, 2), plan_cpu_s=round(u2 - u1, 2), record_cpu_s=round(u3 - u2, 2),
                      submit_cpu_s=round(u4 - u3, 2), total_cpu_s=round(u4 - u0, 2),
                      load_avg_1m=round(os.getloadavg()[0], 1), cores=os.cpu_count(), submit_calls=n)
        # the same command again, end to end: submits nothing
        mark = time.time()
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, str(ROOT / "sweep.py"), *overrides], cwd=ROOT,
                           capture_output=True, text=True)
        report["rerun_cli_s"] = round(time.perf_counter() - t0, 2)
        report["rerun_calls"] = calls(log, mark)
        report["rerun_submitted_nothing"] = "nothing to submit" in p.stdout and len(JobsFile(sd).submissions) == 1

        # ---------------------------------------------------------------- 3. status
        mark = time.time()
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "reasoning360.cli", "status", str(sweep_dir), "--plain"],
                           cwd=ROOT, capture_output=True, text=True)
        report["status_cli_s"] = round(time.perf_counter() - t0, 2)
        report["status_calls"] = calls(log, mark)
        report["status_rows"] = len(p.stdout.splitlines()) - 2
        from reasoning360.launchers import status

        slurm_query.CALLS.clear()
        t0 = time.perf_counter()
        snap = status.snapshot(sweep_dir)
        report["status_snapshot_s"] = round(time.perf_counter() - t0, 2)
        report["status_snapshot_calls"] = dict(slurm_query.CALLS)
        report["status_counts"] = snap.counts

        # ---------------------------------------------------------------- 2. hydra-submitit-launcher
        if not args.skip_hydra and not have_hydra_submitit():
            report["hydra"] = f"not installed: pip install {HYDRA_LAUNCHER} to compare"
        elif not args.skip_hydra:
            app = tmp / "hydra_app"
            app.mkdir()
            (app / "app.py").write_text(textwrap.dedent("""\
                import hydra

                @hydra.main(config_path=None, version_base="1.3")
                def main(cfg):
                    return 0

                if __name__ == "__main__":
                    main()
                """))
            mark = time.time()
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "app.py", "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                 "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=5",
                 "hydra.launcher.array_parallelism=64", "+hydra.launcher.additional_parameters={hold:true}",
                 f"hydra.sweep.dir={tmp / 'multirun'}", "+k=0,1,2,3", f"+seed=range({n_seeds})"],
                cwd=app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            while proc.poll() is None and calls(log, mark).get("sbatch", 0) < 1 and time.perf_counter() - t0 < 600:
                time.sleep(0.05)
            hydra_s = None
            for line in log.read_text().splitlines():
                name, a, b, _ = line.split()
                if name == "sbatch" and float(a) >= mark:
                    hydra_s = float(b) - mark
            # it now waits for its jobs' results: stop it (our process group) and cancel its array;
            # a run that failed before submitting has exited already (nothing to stop)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            out = proc.communicate(timeout=30)[0] or ""
            for f in (tmp / "multirun").rglob("*_submission.sh"):
                hydra_ids.append(f.name.split("_")[0])
            report["hydra_submit_s"] = round(hydra_s, 2) if hydra_s else None
            report["hydra_sbatch_calls"] = calls(log, mark).get("sbatch", 0)
            if hydra_s:
                report["hydra_over_ours"] = round(hydra_s / report["total_s"], 1)
            else:
                tail = [ln for ln in out.splitlines() if ln.strip()][-1:] or [f"exit code {proc.returncode}"]
                report["hydra"] = f"hydra-submitit-launcher submitted nothing: {tail[0][:300]}"
    finally:
        if not args.keep:
            ids = JobsFile(sweep_dir).job_ids() if (sweep_dir / "jobs.json").exists() else []
            ids += hydra_ids
            if ids:
                subprocess.run(["scancel", *sorted(set(ids))], capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept: {tmp} (sweep {sweep_dir}; hydra jobs {' '.join(hydra_ids)})")

    print(json.dumps(report, indent=2))
    print(f"\n{report['points']} points, {report['stages']} stages -> {report['arrays']} array chunks in "
          f"{report['roles']} roles, {report['tasks']} tasks")
    print(f"plan+submit: {report['total_s']} s (compose {report['compose_s']}, plan {report['plan_s']}, "
          f"record {report['record_s']}, submit {report['submit_s']}); sbatch calls: "
          f"{report['submit_calls'].get('sbatch', 0)} (= {report['arrays']} arrays + 1 analysis job)")
    print(f"plan+submit CPU: {report['total_cpu_s']} s (compose {report['compose_cpu_s']}, plan {report['plan_cpu_s']}, "
          f"record {report['record_cpu_s']}, submit {report['submit_cpu_s']}); load average {report['load_avg_1m']} "
          f"on {report['cores']} cores")
    print(f"rerun of the same command: {report['rerun_cli_s']} s, submitted nothing: {report['rerun_submitted_nothing']}")
    if report.get("hydra"):
        print(report["hydra"])
    if report.get("hydra_submit_s"):
        print(f"hydra-submitit-launcher, same {report['points']} points: {report['hydra_submit_s']} s to submit "
              f"({report['hydra_sbatch_calls']} sbatch call); ratio {report['hydra_over_ours']}x ours")
    print(f"r360 status: {report['status_cli_s']} s end to end ({report['status_snapshot_s']} s in-process), "
          f"calls {report['status_calls']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
