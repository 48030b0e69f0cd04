"""Every task of the study end to end: `python sweep.py +grid=smoke_all` on the local engine
(k = 1 for the tasks with backtrack SFT data, cold start for the RL-only ones; tiny sizes and
steps, ~2-4 min on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from fixtures_smoke import REPO
from reasoning360.sweep import sweepdir

pytestmark = pytest.mark.slow

TASKS = ["countdown", "sudoku", "arc_1d", "advanced_geometry", "knights_knaves", "color_cube_rotation",
         "list_functions", "zebra_puzzles", "self_reference", "gsm_symbolic"]
BACKTRACK = TASKS[:5]
# smaller still than configs/grid/smoke_all.yaml: this test is about wiring, not learning
OVERRIDES = ["data.sft_size=24", "data.train_size=8", "data.val_size=2", "data.test_size=4",
             "sft.max_steps=2", "sft.batch_size=4", "sft.save_every=2", "rl.steps=1", "rl.batch_size=2",
             "rl.mini_batch_size=2", "rl.save_every=1", "rl.rollout.n=2", "rl.rollout.max_new_tokens=16",
             "eval.max_new_tokens=16"]


def test_smoke_all_runs_every_task(tmp_path):
    env = {**os.environ, "R360_ROOT": str(tmp_path), "WANDB_SILENT": "true"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "sweep.py", "+grid=smoke_all", *OVERRIDES], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    wall = time.time() - t0
    tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
    assert proc.returncode == 0, tail
    sweep = tmp_path / "sweeps" / "smoke_all"
    plan, store, _ = sweepdir.load(sweep)
    names = [pp.point.name for pp in plan.points]
    assert names == [f"{t}-k1-s0" for t in BACKTRACK] + [f"{t}-cold_start-s0" for t in TASKS[5:]], names
    for sid, stage in plan.stages.items():
        assert store.stage(sid).is_done(), (sid, stage.kind)
        if stage.kind == "eval":
            items = pd.read_parquet(store.stage(sid).path / "items.parquet")
            assert items.groupby("protocol").size().to_dict() == {"greedy": 4, "sample": 4}   # 4 items x 2
            assert set(items["score"]).issubset({0.0, 0.1, 1.0})
    df = pd.read_csv(sweep / "results.csv")
    assert sorted(df["task"]) == sorted(TASKS) and (df["state"] == "done").all()
    print(f"smoke_all: {wall:.0f} s wall")
