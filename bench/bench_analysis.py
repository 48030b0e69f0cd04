"""Benchmark: load and aggregate a sweep of 1,000 runs x 1,000 logged steps in <= 2 s.

A run is one training stage (one wandb run): the synthetic sweep has 500 points, each with an
SFT and an RL stage of 1,000 steps (1,000,000 metric rows), plus their evals. The store is
generated once in a temporary directory (not timed). Timed: `load_sweep` (plan, states,
summaries), `sweep.steps` (every metrics.parquet), the main table with bootstrap CIs, and the
per-step curves of every RL and SFT metric (mean/std/min/max over seeds).

    python bench/bench_analysis.py [--runs 1000] [--steps 1000] [--repeat 3] [--limit 2.0] [--keep DIR]

Exits 1 when the best wall time of the repeats is over --limit seconds. The CPU time is printed
too: on a machine shared with other jobs, wall time exceeds it by the contention.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def run_once(sweep_dir: Path) -> tuple[float, dict]:
    from analysis import load_sweep
    from analysis.aggregate import curves, main_table

    c0 = time.process_time()
    t0 = time.perf_counter()
    sweep = load_sweep(sweep_dir)
    t1 = time.perf_counter()
    steps = sweep.steps
    t2 = time.perf_counter()
    table = main_table(sweep)
    t3 = time.perf_counter()
    rl = curves(steps, ["reward_mean", "accuracy", "response_length", "backtracks", "val_accuracy"], role="rl")
    sft = curves(steps, ["loss"], role="sft")
    t4 = time.perf_counter()
    info = {"cpu_s": time.process_time() - c0, "points": len(sweep.points), "rows": len(steps), "cells": len(table),
            "curve_rows": len(rl) + len(sft), "load_s": t1 - t0, "steps_s": t2 - t1,
            "table_s": t3 - t2, "curves_s": t4 - t3}
    return t4 - t0, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=float, default=2.0)
    ap.add_argument("--keep", default=None, help="build the store here and keep it (reused if present)")
    args = ap.parse_args(argv)

    from analysis.synthetic import make_bench_store

    tmp = None
    root = Path(args.keep) if args.keep else Path(tmp := tempfile.mkdtemp(prefix="r360-bench-"))
    sweep_dir = root / "sweeps" / "bench"
    if not (sweep_dir / "plan.json").exists():
        t = time.perf_counter()
        make_bench_store(root, runs=args.runs, steps=args.steps)
        print(f"generated {args.runs} runs x {args.steps} steps in {time.perf_counter() - t:.1f} s ({root})")
    try:
        times = []
        for i in range(args.repeat):
            total, info = run_once(sweep_dir)
            times.append(total)
            print(f"run {i + 1}: {total:.2f} s wall, {info['cpu_s']:.2f} s cpu  (load {info['load_s']:.2f}, steps {info['steps_s']:.2f}, "
                  f"table {info['table_s']:.2f}, curves {info['curves_s']:.2f}; {info['points']} points, "
                  f"{info['rows']:,} metric rows, {info['cells']} table cells)")
        best = min(times)
        ok = best <= args.limit
        print(f"load + aggregate {args.runs:,} runs x {args.steps:,} steps: {best:.2f} s "
              f"(best of {args.repeat}; limit {args.limit:.1f} s) {'OK' if ok else 'TOO SLOW'}")
        return 0 if ok else 1
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
