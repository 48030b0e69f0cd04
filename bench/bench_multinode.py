"""Bench the Ray-on-Slurm bootstrap on the virtual multi-node cluster
(reasoning360/launchers/slurm/localslurm/virtual-cluster.sh; started here if it is not up, and
then stopped at the end).

    python bench/bench_multinode.py [--reps 3] [--nodes 1,2,3]

For each node count, `--reps` jobs of `python -m reasoning360.ray.probe` (the job's Ray cluster
formed exactly as a stage job forms it), one after another:
  * joined: seconds from the bootstrap's start on rank 0 to every node alive in Ray (goal
    <= 10 s for 2 and 3 nodes; the usual Ray-on-Slurm scripts sleep 30 s or more);
  * from process start: the same from rank 0's Python process start (imports included);
  * submit -> up: seconds from `sbatch` to every node joined (Slurm's scheduling and step
    launch included: what a user waits for);
  * teardown: seconds rank 0's Ray took to stop (every Ray process of the job, by PID), and
    from then to the job gone from squeue (Slurm ending the steps on every node);
  * job wall: the job's elapsed time in sacct (start to end, teardown included; 1 s resolution);
  * CPU-s: the job's CPU seconds over all its nodes (sacct TotalCPU, user + system).
The bootstrap's overhead on a one-node job is the 1-node job wall minus that of the same
job without Ray (`python -c pass` under the same srun). Then one 3-node job times a multi-node
step (bench/multinode_step.py on rank 0): the tiny model's rollouts in 2 Ray actors on the two
other nodes, each step a weight broadcast over the network then a batch of rollouts. It also
prints the virtual cluster's start and stop times when it starts it (stop the cluster first to
time them). The machine is shared: the load average is printed with the figures.
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


def run_job(env: dict, out: Path, nodes: int, command: str, mem: str = "1000M") -> tuple[str, float, float]:
    """Submit `srun --ntasks-per-node=1 COMMAND` over `nodes` nodes, wait for its end:
    (job id, submit time, time it left squeue)."""
    wrap = f"srun --unbuffered --output {out}/%j_%t.log {command}"
    t_submit = time.time()
    jid = subprocess.run(["sbatch", "--parsable", f"-N{nodes}", "--ntasks-per-node=1", "-c1", f"--mem={mem}",
                          "-J", "r360-bench-multinode", "-o", f"{out}/%j.batch", "--wrap", wrap],
                         capture_output=True, text=True, env=env, check=True).stdout.strip().split(";")[0]
    while subprocess.run(["squeue", "-h", "-j", jid], capture_output=True, text=True, env=env).stdout.strip():
        time.sleep(0.2)
    return jid, t_submit, time.time()


def _seconds(v: str) -> float:
    """sacct's [D-][HH:]MM:SS[.mmm] as seconds."""
    days, _, rest = v.rpartition("-")
    parts = [float(x) for x in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (float(days) if days else 0.0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def job_cpu(env: dict, jid: str) -> float:
    """CPU seconds (user + system) of the job over all its nodes: the job's own line of sacct
    (the sum of its steps; with -X sacct reports 0)."""
    for line in subprocess.run(["sacct", "-n", "-P", "-j", jid, "-o", "JobID,TotalCPU"], capture_output=True,
                               text=True, env=env).stdout.split():
        job, _, cpu = line.partition("|")
        if job == jid:
            return _seconds(cpu)
    return float("nan")


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
    step = None
    try:
        base = [job_wall(env, run_job(env, out, 1, f"{sys.executable} -c pass")[0]) for _ in range(a.reps)]
        for n in counts:
            r = {k: [] for k in ("joined", "proc", "wall", "up", "teardown", "gone", "cpu")}
            for _ in range(a.reps):
                jid, t_submit, t_gone = run_job(env, out, n, f"{sys.executable} -u -m reasoning360.ray.probe {out} --hold 0")
                rep = json.loads((out / jid / "probe.json").read_text())
                down = json.loads((out / jid / "teardown.json").read_text())
                assert len(rep["nodes"]) == n, rep
                r["joined"].append(rep["joined_s"])
                r["proc"].append(rep["process_to_joined_s"])
                r["up"].append(rep["joined_at"] - t_submit)
                r["teardown"].append(down["teardown_s"])
                r["gone"].append(t_gone - down["at"])
                r["wall"].append(job_wall(env, jid))
                r["cpu"].append(job_cpu(env, jid))
            rows.append((n, r))
        # a multi-node step: rollouts on the two nodes that do not host the driver
        stepf = out / "step.json"
        jid, t_submit, t_gone = run_job(env, out, 3, f"{sys.executable} -u -m reasoning360.ray.probe {out} --run "
                                        f"{sys.executable} {ROOT / 'bench' / 'multinode_step.py'} {stepf} --steps 5",
                                        mem="2000M")
        step = json.loads(stepf.read_text()) if stepf.exists() else None
        if step is None:
            print(f"multi-node step job {jid} failed: {(out / f'{jid}_0.log').read_text()[-2000:]}", file=sys.stderr)
        else:
            step.update(wall=job_wall(env, jid), cpu=job_cpu(env, jid), submit_to_end=t_gone - t_submit)
    finally:
        if started:
            t0 = time.time()
            sh("stop")
            t_stop = time.time() - t0
    med = statistics.median
    def cell(v: list[float], w: int = 6) -> str:
        return f"{med(v):>{w}.1f} [{min(v):.1f}-{max(v):.1f}]"
    print(f"medians [min-max] of {a.reps} jobs per node count, seconds")
    print(f"{'nodes':>5}  {'joined':>16}  {'from process':>16}  {'submit->up':>16}  {'Ray teardown':>16}  "
          f"{'->job gone':>16}  {'job wall':>8}  {'CPU-s':>6}")
    for n, r in rows:
        print(f"{n:>5}  " + "  ".join(cell(r[k]).rjust(16) for k in ("joined", "proc", "up", "teardown", "gone"))
              + f"  {med(r['wall']):>8.0f}  {med(r['cpu']):>6.1f}")
    one = next((r for n, r in rows if n == 1), None)
    print(f"one-node job without Ray: job wall {med(base):.0f} s (median of {a.reps})")
    if one:
        print(f"bootstrap overhead on a one-node job: {med(one['wall']) - med(base):.0f} s of job wall "
              f"({med(one['joined']):.1f} s to a ready head, the rest teardown and imports)")
    for n, r in rows:
        if n > 1:
            print(f"{n} nodes: all joined in {med(r['joined']):.1f} s (goal <= 10 s; the usual scripts sleep >= 30 s): "
                  + ("met" if med(r['joined']) <= 10 else "NOT met"))
    if step is not None:
        print(f"multi-node step (3 nodes, 2 rollout actors on {', '.join(step['actor_hosts'])}, {step['params']:,} "
              f"params): step {med(step['step_s']):.2f} s = weight broadcast {med(step['broadcast_s']):.2f} s + "
              f"rollouts {med(step['generate_s']):.2f} s (median of {len(step['step_s'])}); actors up in "
              f"{step['workers_up_s']:.1f} s; job wall {step['wall']:.0f} s, {step['cpu']:.1f} CPU-s")
    if started:
        print(f"virtual cluster: start {t_start:.1f} s, stop {t_stop:.1f} s")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
