"""Bench the Ray-on-Slurm bootstrap on the virtual multi-node cluster
(reasoning360/launchers/slurm/localslurm/virtual-cluster.sh; started here if it is not up, and
then stopped at the end).

    python bench/bench_multinode.py [--reps 3] [--nodes 1,2,3]

For each node count, `--reps` jobs of `python -m reasoning360.ray.probe` (the job's Ray cluster
formed exactly as a stage job forms it), one after another:
  * joined: seconds from the bootstrap's start on rank 0 to every node alive in Ray (goal
    <= 10 s for 2 and 3 nodes; the usual Ray-on-Slurm scripts sleep 30 s or more);
  * from process start: the same from rank 0's Python process start (imports included);
  * job wall: the job's elapsed time in sacct (start to end, teardown included; 1 s resolution).
The bootstrap's overhead on a one-node job is the 1-node job wall minus that of the same
job without Ray (`python -c pass` under the same srun). It also prints the virtual cluster's
start and stop times. The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIRTUAL = ROOT / "reasoning360" / "launchers" / "slurm" / "localslurm" / "virtual-cluster.sh"
BASE = os.environ.get("VCLUSTER_BASE", "/tmp/r360-vcluster")


def sh(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(VIRTUAL), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "VCLUSTER_BASE": BASE})


def client_env() -> dict:
    """What `virtual-cluster.sh env` exports: its SLURM_CONF, its client wrappers first on PATH."""
    env = {**os.environ, "SLURM_CONF": f"{BASE}/etc/slurm.conf", "PATH": f"{BASE}/bin:{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def run_job(env: dict, out: Path, nodes: int, command: str) -> str:
    """Submit `srun --ntasks-per-node=1 COMMAND` over `nodes` nodes, wait for its end; its id."""
    wrap = f"srun --unbuffered --output {out}/%j_%t.log {command}"
    jid = subprocess.run(["sbatch", "--parsable", f"-N{nodes}", "--ntasks-per-node=1", "-c1", "--mem=1000M",
                          "-J", "r360-bench-multinode", "-o", f"{out}/%j.batch", "--wrap", wrap],
                         capture_output=True, text=True, env=env, check=True).stdout.strip().split(";")[0]
    while subprocess.run(["squeue", "-h", "-j", jid], capture_output=True, text=True, env=env).stdout.strip():
        time.sleep(0.5)
    return jid


def job_wall(env: dict, jid: str) -> float:
    for _ in range(20):       # sacct lags a little behind squeue
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", jid, "-o", "State,ElapsedRaw"], capture_output=True,
                             text=True, env=env).stdout.split()
        if out and out[-1].split("|")[0] == "COMPLETED":
            return float(out[-1].split("|")[1])
        time.sleep(0.5)
    raise RuntimeError(f"job {jid} did not complete: {out}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--nodes", default="1,2,3")
    a = ap.parse_args()
    counts = [int(n) for n in a.nodes.split(",")]
    started = False
    t_start = None
    if sh("status").returncode != 0:
        t0 = time.time()
        p = sh("start", str(max(counts + [3])))
        t_start = time.time() - t0
        if p.returncode != 0:
            print(p.stdout + p.stderr, file=sys.stderr)
            return 1
        started = True
    env = client_env()
    out = Path(tempfile.mkdtemp(prefix="r360-bench-mn-", dir="/tmp"))
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    rows = []
    try:
        base = [job_wall(env, run_job(env, out, 1, f"{sys.executable} -c pass")) for _ in range(a.reps)]
        for n in counts:
            joined, proc, wall = [], [], []
            for _ in range(a.reps):
                jid = run_job(env, out, n, f"{sys.executable} -u -m reasoning360.ray.probe {out} --hold 0")
                rep = json.loads((out / jid / "probe.json").read_text())
                assert len(rep["nodes"]) == n, rep
                joined.append(rep["joined_s"])
                proc.append(rep["process_to_joined_s"])
                wall.append(job_wall(env, jid))
            rows.append((n, joined, proc, wall))
    finally:
        if started:
            t0 = time.time()
            sh("stop")
            t_stop = time.time() - t0
    med = statistics.median
    print(f"{'nodes':>5}  {'joined (s)':>22}  {'from process start (s)':>24}  {'job wall (s)':>14}")
    for n, joined, proc, wall in rows:
        print(f"{n:>5}  {med(joined):>8.1f} [{min(joined):.1f}-{max(joined):.1f}]".ljust(31)
              + f"{med(proc):>10.1f} [{min(proc):.1f}-{max(proc):.1f}]".ljust(26) + f"{med(wall):>10.0f}")
    one = next((r for r in rows if r[0] == 1), None)
    print(f"one-node job without Ray: job wall {med(base):.0f} s (median of {a.reps})")
    if one:
        print(f"bootstrap overhead on a one-node job: {med(one[3]) - med(base):.0f} s of job wall "
              f"({med(one[1]):.1f} s to a ready head, the rest teardown and imports)")
    for n, joined, _, _ in rows:
        if n > 1:
            print(f"{n} nodes: all joined in {med(joined):.1f} s (goal <= 10 s; the usual scripts sleep >= 30 s): "
                  + ("met" if med(joined) <= 10 else "NOT met"))
    if started:
        print(f"virtual cluster: start {t_start:.1f} s, stop {t_stop:.1f} s")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
