"""The embedded default end to end: `python sweep.py +grid=smoke` on the local engine, its
table, reuse of DONE stages, and resumption after SIGKILL and after Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fixtures_smoke import REPO, smoke_sweep  # noqa: F401
from reasoning360.launchers.local import concurrency
from reasoning360.sweep import sweepdir
from reasoning360.sweep.compose import compose
from reasoning360.tracking import read_metrics


def sweep_cmd(root: Path, *overrides: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "R360_ROOT": str(root), "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, "sweep.py", "+grid=smoke", *overrides], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_smoke_table_has_every_point_and_column(smoke_sweep):
    df = pd.read_csv(smoke_sweep / "results.csv")
    assert list(df["point"]) == ["countdown-k0-s0", "countdown-k1-s0"]
    for col in ("task", "k", "sft_acc", "rl_acc", "rl_format", "rl_tokens", "wall_s"):
        assert col in df.columns
    assert (df["state"] == "done").all()
    assert df[["sft_acc", "rl_acc", "rl_format"]].apply(lambda s: s.between(0, 1)).all().all()
    assert (df["rl_tokens"] > 0).all() and (df["wall_s"] > 0).all()
    assert pd.read_parquet(smoke_sweep / "results.parquet").shape == df.shape


def test_a_finished_sweep_leaves_its_report(smoke_sweep):
    """sweep.report: the local launcher ends with `r360 report`: tables with CIs, figures, HTML."""
    report = smoke_sweep / "report"
    assert (report / "report.html").exists() and (report / "main_table.md").exists()
    assert list(report.glob("fig_*.png"))


def test_every_stage_is_done_with_spec_metrics_and_outputs(smoke_sweep):
    plan, store, _ = sweepdir.load(smoke_sweep)
    workers, threads = concurrency(compose(["+grid=smoke"]))
    assert workers == 2 or len(os.sched_getaffinity(0)) < 2
    for sid, stage in plan.stages.items():
        sd = store.stage(sid)
        assert sd.is_done(), sid
        # threads follow from the plan, not from timing: the stages every other one is upstream
        # or downstream of run alone with the pool's whole budget, the others with `threads`
        alone = stage.kind in ("data", "pretrain")
        assert [a["threads"] for a in sd.attempts() if "start" in a] == [workers * threads if alone else threads], sid
        assert (sd.path / "spec.json").exists()
        if stage.kind in ("sft", "rl"):
            assert (sd.path / "model" / "config.json").exists()
            steps = [r["step"] for r in read_metrics(sd.path)]
            assert steps and len(steps) == len(set(steps))
        if stage.kind == "eval":        # every test item under each protocol (sample, greedy)
            items = pd.read_parquet(sd.path / "items.parquet")
            assert len(items) == 32 * 2 and set(items["protocol"]) == {"sample", "greedy"}
            assert set(items["score"]).issubset({0.0, 0.1, 1.0})


def test_rerun_reuses_every_done_stage(smoke_sweep, tmp_path):
    root = smoke_sweep.parent.parent
    plan, store, _ = sweepdir.load(smoke_sweep)
    before = {sid: (store.stage(sid).path / "DONE").stat().st_mtime for sid in plan.stages}
    proc = sweep_cmd(root)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    after = {sid: (store.stage(sid).path / "DONE").stat().st_mtime for sid in plan.stages}
    assert before == after
    assert "results" in out


def _wait_for(predicate, timeout: float, proc: subprocess.Popen):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def _sft_dir(root: Path) -> Path:
    found = [p for p in (root / "store").glob("sft-*") if p.is_dir()]
    return found[0] if found else root / "store" / "none"


SMALL = ["grid.backtracks=[0]", "data.sft_size=200", "sft.max_steps=60", "sft.save_every=5",
         "sft.batch_size=16", "rl.steps=2", "eval.max_new_tokens=48", "rl.rollout.max_new_tokens=48"]


def test_sigkill_mid_sft_then_rerun_resumes_from_checkpoint(tmp_path):
    proc = sweep_cmd(tmp_path, *SMALL)
    ckpts = lambda: list((_sft_dir(tmp_path) / "checkpoints").glob("step_*/trainer_state.pt"))
    assert _wait_for(lambda: ckpts() and len(read_metrics(_sft_dir(tmp_path))) >= 12, 300, proc), \
        proc.communicate()[0] if proc.poll() is not None else "no checkpoint appeared"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.time()
    sft = _sft_dir(tmp_path)
    assert not (sft / "DONE").exists()
    ckpt_step = max(int(p.parent.name.split("_")[1]) for p in ckpts())

    proc = sweep_cmd(tmp_path, *SMALL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    rows = read_metrics(sft)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), "a metrics row was duplicated"
    assert steps[-1] == 60
    # rows up to the checkpoint come from the killed run; the rest from the resumed one
    assert all(r["time"] < killed_at for r in rows if r["step"] <= ckpt_step)
    assert all(r["time"] > killed_at for r in rows if r["step"] > ckpt_step)
    df = pd.read_csv(tmp_path / "sweeps" / "smoke" / "results.csv")
    assert len(df) == 1 and not math.isnan(df["rl_acc"][0])


@pytest.mark.parametrize("workers", [1, 2])      # one stage at a time / two side by side
def test_ctrl_c_checkpoints_then_rerun_completes(tmp_path, workers):
    proc = sweep_cmd(tmp_path, *SMALL, f"launcher.workers={workers}")
    assert _wait_for(lambda: len(read_metrics(_sft_dir(tmp_path))) >= 8, 300, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "checkpoint saved" in out
    sft = _sft_dir(tmp_path)
    last = max(r["step"] for r in read_metrics(sft))
    saved = [int(p.name.split("_")[1]) for p in (sft / "checkpoints").glob("step_*")]
    assert last in saved, (last, saved)          # saved exactly where it stopped: nothing lost
    proc = sweep_cmd(tmp_path, *SMALL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert (sft / "DONE").exists()
    steps = [r["step"] for r in read_metrics(sft)]
    assert steps == sorted(set(steps)) and steps[-1] == 60


def test_bad_override_is_refused_before_anything_is_written(tmp_path):
    proc = sweep_cmd(tmp_path, "grid.backtracks=[-2]")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "grid.backtracks" in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()
