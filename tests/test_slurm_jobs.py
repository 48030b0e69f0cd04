"""The Slurm launcher against the real local Slurm cluster (tests/slurm_cluster.py).

Each test uses its own R360_ROOT and cancels what it submitted."""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path

import pytest

from reasoning360.launchers import status
from reasoning360.launchers.slurm import query as slurm_query
from reasoning360.launchers.slurm.jobs import JobsFile
from reasoning360.sweep import sweepdir

from slurm_cluster import TINY, cancel_sweep, r360, sweep_cmd, wait_for

pytestmark = pytest.mark.slurm


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _settled(sweep_dir: Path):
    """All stages done, or nothing left that can still run."""
    snap = status.snapshot(sweep_dir)
    return snap if not [r for r in snap.rows if r.state in ("running", "pending")] else None


def test_aftercorr_semantics(slurm_cluster, tmp_path):
    """What the array planning relies on: with aftercorr, a task that has no corresponding
    task upstream waits for the whole upstream array (so shared stages use afterok jobid_task)."""
    def sb(*a):
        out = subprocess.run(["sbatch", "--parsable", "-c1", "--mem=50M", "-o", "/dev/null", *a],
                             capture_output=True, text=True, check=True).stdout
        return out.strip().split(";")[0]

    # task 2 of A runs until the test lets it end: no timing window to miss on a loaded machine
    gate = tmp_path / "release-a2"
    a = sb("--array=0,2", "--wrap", f"[ $SLURM_ARRAY_TASK_ID = 0 ] || until [ -e {gate} ]; do sleep 0.2; done")
    b = sb("--array=0-2", f"--dependency=aftercorr:{a}", "--wrap", "true")
    try:
        def done(*keys):
            acct = slurm_query.sacct([a, b])
            return acct if all(k in acct and acct[k].state == "COMPLETED" and acct[k].start for k in keys) else None
        # the corresponding task only: B_0 runs while A_2 is still running
        acct = wait_for(lambda: done(f"{a}_0", f"{b}_0"), 120, what="task 0 of both arrays")
        assert acct[f"{a}_2"].state == "RUNNING", acct
        time.sleep(3)                          # no task 1 upstream: B_1 waits for the whole of A
        q = slurm_query.squeue([b])
        assert q[f"{b}_1"].state == "PENDING" and q[f"{b}_1"].reason == "Dependency", q
        gate.touch()
        acct = wait_for(lambda: done(f"{a}_2", f"{b}_1", f"{b}_2"), 120, what="the rest of both arrays")
        assert acct[f"{b}_1"].start >= acct[f"{a}_2"].end
    finally:
        slurm_query.scancel([a, b])


def test_smoke_arrays_failure_resubmit_matches_local(slurm_cluster, tmp_path):
    """A real failure: the RL jobs are held until the data stage is done, its train split is then
    truncated (a corrupt file on a shared filesystem), so every RL stage fails for real; the
    file is restored and `r360 resubmit --failed` completes the sweep without rerunning
    anything DONE, with the same results as the local launcher."""
    root, local_root = tmp_path / "slurm", tmp_path / "local"
    t0 = time.time()
    # max_array_size=1: every role is split into one array chunk per point (MaxArraySize splitting,
    # cross-chunk afterok on the shared data stage)
    chunked = ["launcher=slurm", "launcher.max_array_size=1"]
    p = sweep_cmd(root, *TINY, *chunked)
    assert p.returncode == 0, p.stdout + p.stderr
    assert time.time() - t0 < 30
    sweep = root / "sweeps" / "smoke"
    assert str(sweep) in p.stdout.replace("\n", "")
    rl_jobs = [a["job_id"] for a in JobsFile(sweep).arrays() if a["role"] == "rl"]
    slurm_query.run(["scontrol", "hold", *rl_jobs])
    try:
        # the same command again submits nothing: every stage is queued
        again = sweep_cmd(root, *TINY, *chunked)
        assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
        assert len(JobsFile(sweep).submissions) == 1
        assert {a["name"] for a in JobsFile(sweep).arrays()} >= {"data-c0", "traces-c1", "rl_eval-c1"}

        plan, store, _ = sweepdir.load(sweep)
        data = store.stage(plan.points[0].stages["data"])
        wait_for(data.is_done, 240, 1, "the data stage")
        train = data.path / "train.parquet"
        good = train.read_bytes()
        train.write_bytes(good[: len(good) // 3])          # corrupt: RL cannot read it
        slurm_query.run(["scontrol", "release", *rl_jobs])

        # the reference: the same sweep through the local launcher, meanwhile
        loc = sweep_cmd(local_root, *TINY, timeout=600)
        assert loc.returncode == 0, loc.stdout[-2000:] + loc.stderr[-2000:]

        snap = wait_for(lambda: _settled(sweep), 400, 2, "the first submission to settle")
        failed = [r for r in snap.rows if r.state == "failed" and r.role == "rl"]
        assert sorted(r.point for r in failed) == sorted(pp.name for pp in plan.points), status.plain(snap)
        stuck = [r for r in snap.rows if r.state == "failed" and r.role == "rl_eval"]
        assert sorted(r.point for r in stuck) == sorted(pp.name for pp in plan.points), status.plain(snap)
        assert all("dependency never satisfied" in r.reason for r in stuck), status.plain(snap)
        assert not [r for r in snap.rows if r.state not in ("done", "failed")], status.plain(snap)
        train.write_bytes(good)                             # the file system is fixed

        st = r360("status", str(sweep), "--plain")
        assert st.returncode == 1 and "failed" in st.stdout
        logs = r360("logs", str(sweep), failed[0].point, "--stage", "rl")
        assert "Traceback" in logs.stdout and "parquet" in logs.stdout.lower(), logs.stdout

        done_before = {}
        for sid in plan.stages:
            sd = store.stage(sid)
            if sd.is_done():
                done_before[sid] = ((sd.path / "DONE").read_text(), len(sd.attempts()))
        assert len(done_before) == len(plan.stages) - 4

        rs = r360("resubmit", str(sweep), "--failed")
        assert rs.returncode == 0, rs.stdout + rs.stderr
        new = JobsFile(sweep).submissions[-1]["arrays"]
        assert sorted(s for a in new for s in a["tasks"].values()) == sorted(
            pp.stages[r] for pp in plan.points for r in ("rl", "rl_eval"))

        def all_done():
            s = status.snapshot(sweep)
            return s if s.counts == {"done": len(plan.stages)} else None
        wait_for(all_done, 300, 2, "the resubmitted stages")
        for sid, (stamp, n) in done_before.items():        # nothing DONE was run again
            sd = store.stage(sid)
            assert (sd.path / "DONE").read_text() == stamp
            assert len(sd.attempts()) == n
        assert [a["status"] for a in store.stage(failed[0].stage_id).attempts()] == ["failed", "done"]

        # the analysis job (afterany) writes the results table: the same as the local launcher's
        res = sweep / "results.csv"
        wait_for(lambda: res.exists() and all(r["state"] == "done" for r in _rows(res)), 120, 2,
                 "the analysis job's results.csv")
        cols = ["point", "task", "k", "seed", "sft_acc", "rl_acc", "rl_format", "rl_tokens", "rl_backtracks"]
        ours = [{k: r[k] for k in cols} for r in _rows(res)]
        ref = [{k: r[k] for k in cols} for r in _rows(local_root / "sweeps" / "smoke" / "results.csv")]
        assert ours == ref
        # stronger than the (tiny) accuracies: identical training losses in both stores
        lplan, lstore, _ = sweepdir.load(local_root / "sweeps" / "smoke")
        for sid, st_ in plan.stages.items():
            if st_.kind in ("sft", "rl"):
                a, b = store.stage(sid).summary(), lstore.stage(sid).summary()
                key = "final_loss" if st_.kind == "sft" else "reward_mean_last5"
                assert a[key] == b[key], (sid, a, b)
    finally:
        cancel_sweep(sweep)


def test_bad_profile_and_unsatisfiable_request_refused(slurm_cluster, tmp_path):
    before = slurm_query.squeue()
    cases = [("cluster.partition=nope", "cluster.partition: 'nope' is not a partition"),
             ("cluster.resources.sft.cpus=64", "cluster.resources.sft.cpus: 64 per node"),
             ("cluster.resources.rl.mem_gb=4000", "cluster.resources.rl.mem_gb:"),
             ("cluster.resources.eval.gpus=1", "cluster.resources.eval.gpus: 1 GPUs per node"),
             ("launcher.resources.rl.nodes=3", "launcher.resources.rl.nodes: 3 nodes")]
    for override, msg in cases:
        p = sweep_cmd(tmp_path, *TINY, "launcher=slurm", override)
        out = " ".join((p.stdout + p.stderr).split())
        assert p.returncode == 2 and msg in out, (override, out[-600:])
        assert not (tmp_path / "sweeps" / "smoke" / "jobs.json").exists()
    assert set(slurm_query.squeue()) <= set(before)
    # the dry run prints the plan and submits nothing
    p = sweep_cmd(tmp_path, *TINY, "launcher=slurm", "sweep.dry_run=true")
    assert p.returncode == 0 and "dry run: nothing submitted" in p.stdout and "GPU-hours" in p.stdout
    assert "afterok data[0]" in p.stdout and "aftercorr" in p.stdout


