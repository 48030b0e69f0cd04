"""Benchmark: load and aggregate a sweep of 1,000 runs x 1,000 logged steps in <= 2 s, and the
paired statistics of a study of 10 points x 5 seeds x 1,000 test items x 2 protocols in <= 2 s.

Part 1. A run is one training stage (one wandb run): the synthetic sweep has 500 points, each
with an SFT and an RL stage of 1,000 steps (1,000,000 metric rows), plus their evals. Timed:
`load_sweep` (plan, states, summaries), `sweep.steps` (every metrics.parquet), the main table
(every eval's items.parquet, the paired two-level bootstrap of analysis.study), and the per-step
curves of every RL and SFT metric (mean/std/min/max over seeds).

Part 2 (the statistics): 10 points (k = 0..3, cold start, 5 SFT baselines) x 5 seeds, each
evaluated before and after RL on 1,000 shared test items under 2 protocols (200,000 item rows).
Timed: `load_sweep`, `sweep.items`, `study()` (every cell's mean and CI, every paired difference
vs cold start, vs k=0 and after vs before RL, every best-k question; 2,000 replicates each),
and the main table of each protocol.

The stores are generated once in a temporary directory (not timed).

    python bench/bench_analysis.py [--runs 1000] [--steps 1000] [--points 10] [--seeds 5] [--items 1000]
                                   [--repeat 3] [--limit 2.0] [--keep DIR]

Exits 1 when the best wall time of the repeats of either part is over --limit seconds. The CPU
time is printed too: on a machine shared with other jobs, wall time exceeds it by the contention.
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


def run_stats_once(sweep_dir: Path) -> tuple[float, dict]:
    from analysis import load_sweep
    from analysis.study import study

    c0 = time.process_time()
    t0 = time.perf_counter()
    sweep = load_sweep(sweep_dir)
    items = sweep.items
    t1 = time.perf_counter()
    st = study(sweep)
    t2 = time.perf_counter()
    tables = [st.table(p) for p in st.protocols]
    t3 = time.perf_counter()
    info = {"cpu_s": time.process_time() - c0, "load_s": t1 - t0, "study_s": t2 - t1, "table_s": t3 - t2,
            "rows": len(items), "cells": len(st.cells), "diffs": len(st.diffs), "best": len(st.best),
            "table_rows": sum(len(t) for t in tables)}
    return t3 - t0, info


STATS_BASELINES = ("cold_start", "short_cot_correct", "short_cot_incorrect", "long_cot_correct",
                   "long_cot_incorrect", "long_cot_wrong_format")


def make_stats_store(root: Path, points: int, seeds: int, items: int) -> Path:
    from analysis.synthetic import make_sweep

    ks = tuple(range(max(1, min(4, points - 1))))
    baselines = STATS_BASELINES[:max(0, points - len(ks))]
    return make_sweep(root, name="bench_stats", ks=ks, baselines=baselines, seeds=range(seeds), n_items=items,
                      levels=(), protocols=("sample", "greedy"), item_sd=1.0, seed_sd=0.1, text=False,
                      sft_steps=5, rl_steps=5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=float, default=2.0)
    ap.add_argument("--points", type=int, default=10, help="part 2: points (k's, then baselines)")
    ap.add_argument("--seeds", type=int, default=5, help="part 2: training seeds per point")
    ap.add_argument("--items", type=int, default=1000, help="part 2: test items")
    ap.add_argument("--keep", default=None, help="build the stores here and keep them (reused if present)")
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

        stats_dir = root / "sweeps" / "bench_stats"
        if not (stats_dir / "plan.json").exists():
            t = time.perf_counter()
            make_stats_store(root, args.points, args.seeds, args.items)
            print(f"generated {args.points} points x {args.seeds} seeds x {args.items} items x 2 protocols in "
                  f"{time.perf_counter() - t:.1f} s")
        stimes = []
        for i in range(args.repeat):
            total, info = run_stats_once(stats_dir)
            stimes.append(total)
            print(f"stats run {i + 1}: {total:.2f} s wall, {info['cpu_s']:.2f} s cpu  (load+items "
                  f"{info['load_s']:.2f}, study {info['study_s']:.2f}, tables {info['table_s']:.2f}; "
                  f"{info['rows']:,} item rows, {info['cells']} cells, {info['diffs']} paired differences, "
                  f"{info['best']} best-of questions)")
        sbest = min(stimes)
        sok = sbest <= args.limit
        print(f"paired statistics {args.points} points x {args.seeds} seeds x {args.items:,} items x 2 protocols: "
              f"{sbest:.2f} s (best of {args.repeat}; limit {args.limit:.1f} s) {'OK' if sok else 'TOO SLOW'}")
        return 0 if ok and sok else 1
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
