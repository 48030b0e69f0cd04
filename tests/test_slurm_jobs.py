"""The Slurm launcher against the real local Slurm cluster (tests/slurm_cluster.py).

Each test uses its own R360_ROOT and cancels what it submitted."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest

from reasoning360.launchers.slurm import query as slurm_query, status
from reasoning360.launchers.slurm.jobs import JobsFile
from reasoning360.sweep import sweepdir

from slurm_cluster import TINY, cancel_sweep, r360, sweep_cmd, wait_for

pytestmark = pytest.mark.slurm


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _settled(sweep_dir: Path):
    """All stages done, or nothing left that can still run (stuck dependents excepted)."""
    snap = status.snapshot(sweep_dir)
    active = [r for r in snap.rows if r.state == "running"
              or (r.state == "pending" and "NeverSatisfied" not in r.reason)]
    return snap if not active else None


def test_aftercorr_semantics(slurm_cluster, tmp_path):
    """What the array planning relies on: with aftercorr, a task that has no corresponding
    task upstream waits for the whole upstream array (so shared stages use afterok jobid_task)."""
    def sb(*a):
        out = subprocess.run(["sbatch", "--parsable", "-c1", "--mem=50M", "-o", "/dev/null", *a],
                             capture_output=True, text=True, check=True).stdout
        return out.strip().split(";")[0]

    a = sb("--array=0,2", "--wrap", "sleep $((1 + 3 * SLURM_ARRAY_TASK_ID))")
    b = sb("--array=0-2", f"--dependency=aftercorr:{a}", "--wrap", "true")
    try:
        def finished():
            acct = slurm_query.sacct([a, b])
            keys = [f"{a}_0", f"{a}_2", f"{b}_0", f"{b}_1", f"{b}_2"]
            return acct if all(k in acct and acct[k].state == "COMPLETED" and acct[k].start
                               for k in keys) else None
        acct = wait_for(finished, 240, what="the two arrays")
        assert acct[f"{b}_0"].start < acct[f"{a}_2"].end          # corresponding task only
        assert acct[f"{b}_1"].start >= acct[f"{a}_2"].end         # no task 1 upstream: waits for all
    finally:
        slurm_query.scancel([a, b])


def test_smoke_arrays_failure_resubmit_matches_local(slurm_cluster, tmp_path):
    root, local_root = tmp_path / "slurm", tmp_path / "local"
    flag = tmp_path / "fail-once"
    flag.write_text("rl")                       # the first RL job to start fails once
    t0 = time.time()
    # max_array_size=1: every role is split into one array chunk per point (MaxArraySize splitting,
    # cross-chunk afterok on the shared data stage)
    chunked = ["launcher=slurm", "launcher.max_array_size=1"]
    p = sweep_cmd(root, *TINY, *chunked, env={"R360_FAIL_ONCE": str(flag)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert time.time() - t0 < 30
    sweep = root / "sweeps" / "smoke"
    assert str(sweep) in p.stdout.replace("\n", "")
    try:
        # the same command again submits nothing: every stage is queued
        again = sweep_cmd(root, *TINY, *chunked)
        assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
        assert len(JobsFile(sweep).submissions) == 1
        assert {a["name"] for a in JobsFile(sweep).arrays()} >= {"data-c0", "traces-c1", "rl_eval-c1"}

        # the reference: the same sweep through the local launcher, meanwhile
        loc = sweep_cmd(local_root, *TINY, timeout=600)
        assert loc.returncode == 0, loc.stdout[-2000:] + loc.stderr[-2000:]

        snap = wait_for(lambda: _settled(sweep), 400, 2, "the first submission to settle")
        failed = [r for r in snap.rows if r.state == "failed"]
        # the stage that failed, and its dependent whose dependency can never be satisfied
        # (failed too, not pending forever)
        assert [(r.point, r.role, r.reason) for r in failed] == [
            (failed[0].point, "rl", ""), (failed[0].point, "rl_eval", "dependency never satisfied")], status.plain(snap)

        st = r360("status", str(sweep), "--plain")
        assert st.returncode == 1 and "failed" in st.stdout
        logs = r360("logs", str(sweep), failed[0].point, "--stage", "rl")
        assert "injected failure" in logs.stdout and "Traceback" in logs.stdout, logs.stdout

        plan, store, _ = sweepdir.load(sweep)
        done_before = {}
        for sid in plan.stages:
            sd = store.stage(sid)
            if sd.is_done():
                done_before[sid] = ((sd.path / "DONE").read_text(),
                                    (sd.path / "attempts.jsonl").read_text().count("\n"))
        assert len(done_before) == len(plan.stages) - 2

        rs = r360("resubmit", str(sweep), "--failed")
        assert rs.returncode == 0, rs.stdout + rs.stderr
        new = JobsFile(sweep).submissions[-1]["arrays"]
        assert sorted(s for a in new for s in a["tasks"].values()) == sorted(
            {failed[0].stage_id, next(pp.stages["rl_eval"] for pp in plan.points if pp.name == failed[0].point)})

        def all_done():
            s = status.snapshot(sweep)
            return s if s.counts == {"done": len(plan.stages)} else None
        wait_for(all_done, 300, 2, "the resubmitted stages")
        for sid, (stamp, n) in done_before.items():        # nothing DONE was run again
            sd = store.stage(sid)
            assert (sd.path / "DONE").read_text() == stamp
            assert (sd.path / "attempts.jsonl").read_text().count("\n") == n
        att = [json.loads(x)["status"] for x in
               (store.stage(failed[0].stage_id).path / "attempts.jsonl").read_text().splitlines()]
        assert att == ["failed", "done"]

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


def test_usr2_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    steps = 150
    p = sweep_cmd(tmp_path, *TINY, "launcher=slurm", "grid.backtracks=[0]", f"sft.max_steps={steps}",
                  "sft.save_every=1000", "sft.batch_size=8", "launcher.preempt_grace_s=30")
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = tmp_path / "sweeps" / "smoke"
    try:
        plan, store, _ = sweepdir.load(sweep)
        sid = plan.points[0].stages["sft"]
        sd = store.stage(sid)
        ref = JobsFile(sweep).latest(sid)[0]

        def midway():
            row = status.tail_row(sd.path / "metrics.jsonl")
            return row and 5 <= row["step"] < steps - 30
        wait_for(midway, 240, 0.5, "the SFT stage to be a few steps in")
        slurm_query.run(["scancel", "--signal=USR2", ref])
        wait_for(sd.is_done, 300, 2, "the requeued SFT stage to finish")
        att = [json.loads(x) for x in (sd.path / "attempts.jsonl").read_text().splitlines()]
        assert [a["status"] for a in att] == ["preempted", "done"]
        assert att[0]["job"] == att[1]["job"]            # the same job, requeued
        rows = [json.loads(x) for x in (sd.path / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, steps + 1))   # contiguous, no duplicates
        log = (sweep / "slurm" / "logs" / f"{ref}_0_log.out").read_text()
        assert "USR2" in log and "requeued" in log
    finally:
        cancel_sweep(sweep)
