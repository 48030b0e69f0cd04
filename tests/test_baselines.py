"""The distilled baselines end to end: `python sweep.py +grid=smoke_baselines` on the local
engine. The k=0 SFT model of the smoke sweep is the teacher (its stages are reused from the
smoke fixture's store); a distill stage samples it on the SFT problems with the builtin
sampler, grades every answer with the real countdown verifier, and a baseline SFTs on the
wrong-format split, then runs GRPO and eval like any point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reasoning360.sweep import sweepdir
from reasoning360.sweep.runner import run_stage
from reasoning360.tasks import score

from fixtures_smoke import REPO, smoke_sweep  # noqa: F401

BASELINE = "countdown-long_cot_wrong_format-s0"


@pytest.fixture(scope="module")
def baselines_sweep(smoke_sweep, tmp_path_factory) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("baselines_root")
    shutil.copytree(smoke_sweep.parent.parent / "store", root / "store", symlinks=True)
    env = {**os.environ, "R360_ROOT": str(root), "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "sweep.py", "+grid=smoke_baselines"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "sweeps" / "smoke_baselines"


def _stages(sweep: Path, point: str):
    plan, store, _ = sweepdir.load(sweep)
    (pp,) = [p for p in plan.points if p.name == point]
    return plan, store, pp.stages


def test_the_baseline_row_is_in_the_results(baselines_sweep):
    df = pd.read_csv(baselines_sweep / "results.csv")
    assert list(df["point"]) == ["countdown-k0-s0", BASELINE]
    assert (df["state"] == "done").all()
    row = df[df.point == BASELINE].iloc[0]
    assert 0 <= row["rl_acc"] <= 1 and row["rl_tokens"] > 0


def test_distill_stage_grades_every_problem_into_three_splits(baselines_sweep):
    plan, store, st = _stages(baselines_sweep, BASELINE)
    k0 = _stages(baselines_sweep, "countdown-k0-s0")[2]
    assert st["teacher"] == k0["sft"]                        # the smoke k=0 model, reused
    d = store.stage(st["distill"]).path
    samples = [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines()]
    problems = pd.read_parquet(store.stage(st["data"]).path / "sft_problems.parquet")
    assert sorted((r["index"], r["sample"]) for r in samples) == [(i, 0) for i in range(len(problems))]
    splits = {name: pd.read_parquet(d / f"{name}.parquet") for name in ("correct", "incorrect", "incorrect_format")}
    assert sum(len(s) for s in splits.values()) == len(problems)
    summary = store.stage(st["distill"]).summary()
    assert summary["splits"] == {name: len(s) for name, s in splits.items()}
    assert len(splits["incorrect_format"]) > 0
    want = {"correct": 1.0, "incorrect": 0.1, "incorrect_format": 0.0}
    for name, df in splits.items():            # graded by the real verifier, re-checked here
        for row in df.head(20).itertuples():
            gt = row.reward_model["ground_truth"]
            assert score(row.data_source, row.response, gt if isinstance(gt, str) else json.dumps(gt)) == want[name]


def test_the_baseline_sft_trains_on_its_split_only(baselines_sweep):
    plan, store, st = _stages(baselines_sweep, BASELINE)
    spec = store.stage(st["sft"]).spec()
    assert spec["traces"] == st["distill"] and spec["traces_file"] == "incorrect_format.parquet"
    trained = store.stage(st["sft"]).summary()
    n = store.stage(st["distill"]).summary()["splits"]["incorrect_format"]
    assert trained["examples"] + trained["dropped"] == n and trained["dropped"] <= trained["too_long"]
    assert (store.stage(st["sft"]).path / "model" / "config.json").exists()


def test_a_killed_distill_stage_resumes_without_asking_again(baselines_sweep, tmp_path):
    """Cut the sample log at a batch boundary (as a SIGKILL between batches leaves it) and drop
    DONE: the rerun asks only the missing batch, draws what the first run drew, and the
    splits come out identical."""
    plan, store, st = _stages(baselines_sweep, BASELINE)
    src = store.stage(st["distill"]).path
    root = tmp_path / "store"
    shutil.copytree(src, root / src.name)
    spec = store.stage(st["distill"]).spec()
    for dep in (spec["data"], spec["teacher"]):
        (root / dep).symlink_to(store.stage(dep).path)
    d = root / src.name
    lines = (d / "samples.jsonl").read_text().splitlines(keepends=True)
    batch = spec["batch_size"]
    assert len(lines) > batch
    (d / "samples.jsonl").write_text("".join(lines[:batch]))
    for f in ("DONE", "correct.parquet", "incorrect.parquet", "incorrect_format.parquet"):
        (d / f).unlink()
    from reasoning360.sweep.store import Store

    summary = run_stage(Store(root), src.name, show_progress=False)
    assert summary["resumed_samples"] == batch and summary["requests"] == len(lines) - batch
    assert (d / "samples.jsonl").read_text().splitlines(keepends=True) == lines
    for name in ("correct", "incorrect", "incorrect_format"):
        assert pd.read_parquet(d / f"{name}.parquet").equals(pd.read_parquet(src / f"{name}.parquet"))
