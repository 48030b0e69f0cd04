"""Benchmark: how fast the data and traces stages generate at scale=paper, and how long the paper's
sizes take per task at 2 and at 32 workers.

Measured per task, in this process (one core), at the task's `params.paper`:
  rl      problems of the RL/test splits (countdown: the tinyzero set; others unfiltered)
  sft     problems of the SFT split (dead-end filters on: sudoku keeps ~half at 30-50 empty cells)
  trace   `paper` traces at the largest paper k, on those SFT problems
Then `build_data` of one task with 1 and with 2 workers gives the parallel efficiency of the pool
on this machine. The extrapolation assumes that efficiency holds for N workers:

  data stage  = 163,840 RL prompts + 1,000 test + 1,000 val + 76,800 SFT problems
  traces      = 76,800 traces per (task, k); one traces stage per k of the task's paper grid

    python bench/bench_data.py [--rl 1500] [--sft 1000] [--traces 600] [--tasks countdown,sudoku,...]

Figures are wall times on a 2-core machine shared with other jobs: read them as estimates.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cfg  # noqa: E402

SIZES = {"rl": 163_840 + 1_000 + 1_000, "sft": 76_800, "trace": 76_800}
BACKTRACK = ["countdown", "sudoku", "arc_1d", "advanced_geometry", "knights_knaves"]
RL_ONLY = ["color_cube_rotation", "list_functions", "zebra_puzzles", "self_reference"]


def k_grid(c: dict) -> list[int]:
    ks = c["k_values"]
    return ks["paper"] if isinstance(ks, dict) else ks


def rate(fn, n: int):
    """Items per CPU-second of fn(n) in this process, and its items."""
    t0 = time.process_time()
    got = fn(n)
    return len(got) / max(time.process_time() - t0, 1e-9), got


def serial_rate(task, problems, template: str) -> float:
    """Items per CPU-second of the parent's share: JSON round trip, key, row, parquet."""
    import dataclasses
    import json

    from reasoning360.tasks.base import Problem
    from reasoning360.tasks.data import _row, write_rows

    t0 = time.process_time()
    text = json.dumps([dataclasses.asdict(p) for p in problems], sort_keys=True, default=str)
    back = [Problem(**d) for d in json.loads(text)]
    rows = []
    for i, p in enumerate(back):
        task.key(p)
        rows.append(_row(task, p, "train", i, template))
    with tempfile.TemporaryDirectory() as tmp:
        write_rows(Path(tmp) / "x.parquet", rows)
    return len(problems) / max(time.process_time() - t0, 1e-9)


def measure(name: str, a) -> dict:
    from reasoning360.tasks import get_task

    task = get_task(name)
    c = cfg(f"task/{name}")
    params = c["params"]["paper"]
    out = {"task": name}
    out["rl"], rl_problems = rate(lambda n: task.generate(n, 11, task.split_params(params, "train")), a.rl)
    out["serial"] = serial_rate(task, rl_problems, "qwen-instruct")
    if task.backtrack_sft:
        out["sft"], problems = rate(lambda n: task.generate(n, 12, task.split_params(params, "sft")), a.sft)
        k = max(k_grid(c))
        sample = problems[: a.traces]
        t0 = time.process_time()
        for i, p in enumerate(sample):
            task.trace(p, k, "paper", random.Random(i))
        out["trace"] = len(sample) / (time.process_time() - t0)
        out["k_max"], out["n_k"] = k, len(k_grid(c))
    return out


def wall_speedup(name: str, n: int) -> float:
    """Wall-clock speed-up of build_data with 2 workers over 1."""
    from reasoning360.tasks import build_data

    c = cfg(f"task/{name}")
    spec = {"kind": "data", "task": name, "params": c["params"]["paper"], "template": "qwen-instruct",
            "seed": 5, "sizes": {"sft": n // 4, "train": n - n // 4, "val": 0, "test": 0}}
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in (1, 2):
            t0 = time.perf_counter()
            build_data(spec, Path(tmp) / f"w{w}", show_progress=False, workers=w)
            times[w] = time.perf_counter() - t0
    return times[1] / times[2]


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rl", type=int, default=1500, help="RL problems timed per task")
    ap.add_argument("--sft", type=int, default=1000, help="SFT problems timed per task")
    ap.add_argument("--traces", type=int, default=600, help="paper traces timed per task")
    ap.add_argument("--tasks", default=",".join(BACKTRACK + RL_ONLY))
    ap.add_argument("--check_workers", default="", metavar="TASK", help="also time build_data at 1 and 2 workers")
    ap.add_argument("--check_n", type=int, default=3000)
    a = ap.parse_args()
    import pyarrow.parquet  # noqa: F401  (imported before timing: not a per-item cost)
    import reasoning_gym  # noqa: F401

    rows = [measure(t, a) for t in a.tasks.split(",")]
    print(f"{'task':20} {'rl/s':>7} {'sft/s':>7} {'trace/s':>8} {'serial/s':>8} {'k':>3} | "
          f"{'data 1w':>9} {'trace/k 1w':>10} | {'data 2w':>9} {'trace/k 2w':>10} | {'data 32w':>9} {'trace/k 32w':>11}")
    for r in rows:
        work = SIZES["rl"] / r["rl"] + (SIZES["sft"] / r["sft"] if "sft" in r else 0.0)
        serial = (SIZES["rl"] + (SIZES["sft"] if "sft" in r else 0)) / r["serial"]
        trace_work = SIZES["trace"] / r["trace"] if "trace" in r else 0.0
        trace_serial = SIZES["trace"] / r["serial"]
        cells = []
        for w in (1, 2, 32):
            cells += [hours(serial + work / w), hours(trace_serial + trace_work / w) if trace_work else "-"]
        print(f"{r['task']:20} {r['rl']:7.0f} {r.get('sft', 0):7.0f} {r.get('trace', 0):8.0f} {r['serial']:8.0f} "
              f"{r.get('k_max', '-'):>3} | {cells[0]:>9} {cells[1]:>10} | {cells[2]:>9} {cells[3]:>10} | "
              f"{cells[4]:>9} {cells[5]:>11}")
    print("rates: items per CPU-second on one core; data: 163,840 RL + 2,000 val/test + 76,800 SFT problems; "
          "trace/k: 76,800 paper traces at the largest k (one traces stage per k; they run in parallel)")
    if a.check_workers:
        print(f"build_data {a.check_workers} x {a.check_n}: 2 workers are {wall_speedup(a.check_workers, a.check_n):.2f}x "
              "faster than 1 (wall clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
