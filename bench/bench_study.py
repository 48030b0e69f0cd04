"""Time the default study end to end, as a new user runs it, and say how fast this machine is.

    python bench/bench_study.py [--grid backtrack] [--keep] [overrides ...]

Runs `python sweep.py +grid=<grid>` in a fresh R360_ROOT (nothing reused), then `r360 report`,
and prints: wall time, CPU-seconds (user + system of every process it started, orphans
included: bench/cputime.py), and the
machine's measured matmul rate (fp32, one thread and all threads), so figures from machines of
this kind that differ in speed can be compared. Machines of this kind differ by ~1.5x (AVX-512 vs
AVX2-only): a grid sized for 30 minutes on the slower one finishes in ~20 on the faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from cputime import run_counted  # noqa: E402  (bench/cputime.py: counts orphaned descendants too)


def matmul_gflops(threads: int, n: int = 512, seconds: float = 2.0) -> float:
    """fp32 matmul rate of this machine (what the tiny model's training is bound by)."""
    code = f"""
import time, torch
torch.set_num_threads({threads})
a, b = torch.randn({n}, {n}), torch.randn({n}, {n})
for _ in range(3): a @ b
t0, k = time.perf_counter(), 0
while time.perf_counter() - t0 < {seconds}:
    a @ b; k += 1
print(2 * {n}**3 * k / (time.perf_counter() - t0) / 1e9)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="backtrack")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="r360-study-"))
    env = {**os.environ, "R360_ROOT": str(root), "COLUMNS": "160"}
    report: dict = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
                    "matmul_gflops_1thread": round(matmul_gflops(1), 1),
                    "matmul_gflops_all": round(matmul_gflops(len(os.sched_getaffinity(0))), 1)}
    run, wall, cpu = run_counted([sys.executable, str(ROOT / "sweep.py"), f"+grid={a.grid}", *a.overrides],
                                 cwd=ROOT, env=env, text=True, capture_output=True)
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:])
        return run.returncode
    t1 = time.perf_counter()
    rep = subprocess.run([sys.executable, "-m", "reasoning360.cli", "report", a.grid], cwd=ROOT, env=env,
                         text=True, capture_output=True)
    report.update(grid=a.grid, wall_s=round(wall, 1),
                  cpu_s=round(cpu, 1),
                  report_s=round(time.perf_counter() - t1, 1), report_rc=rep.returncode)
    report["cpu_utilisation"] = round(report["cpu_s"] / wall / report["cores"], 2)
    print(run.stdout[-4000:])
    print(json.dumps(report, indent=2))
    print(f"\n+grid={a.grid}: {wall / 60:.1f} min wall, {report['cpu_s']:.0f} CPU-s "
          f"({report['cpu_utilisation']:.0%} of {report['cores']} cores) on {report['cpu']} "
          f"(matmul {report['matmul_gflops_1thread']} GFLOP/s on one thread, {report['matmul_gflops_all']} on all)")
    if a.keep:
        print(f"kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
