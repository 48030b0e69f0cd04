"""A Ray cluster per job: GRPO with 2 Ray rollout workers inside a Slurm job, and nothing of it
left after scancel; a node that does not join is named in the error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasoning360.launchers import status
from reasoning360.launchers.slurm import query as slurm_query
from reasoning360.launchers.slurm.jobs import JobsFile
from reasoning360.ray.bootstrap import RAY_TMP, cluster_pids
from reasoning360.sweep import sweepdir
from reasoning360.tracking import last_row

from slurm_cluster import TINY, cancel_sweep, sweep_cmd, wait_for


def _procs_matching(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                if text in Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(p))
            except OSError:
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_node_that_does_not_join_is_named(tmp_path):
    import tempfile

    short = tempfile.mkdtemp(prefix="r360t-", dir="/tmp")   # Ray's socket paths must stay short
    """Rank 0 waits for every node of the job; a missing one is named, and Ray is stopped."""
    code = f"""
import socket, sys
from pathlib import Path
from reasoning360.ray.bootstrap import RayCluster, RayBootstrapError, cluster_pids
rc = RayCluster(key="t-join", rank=0, hosts=[socket.gethostname(), "gpu-node-17"],
                shared_dir=Path({str(tmp_path)!r}), num_cpus=1, join_timeout_s=2)
try:
    with rc:
        pass
except RayBootstrapError as e:
    print("ERROR:", e)
print("LEFT:", sorted(cluster_pids(rc.temp_dir)))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "R360_RAY_TMP": short})
    assert "ERROR: node(s) gpu-node-17 did not join the Ray cluster of job t-join" in p.stdout, p.stdout + p.stderr
    assert "LEFT: []" in p.stdout
    import shutil

    shutil.rmtree(short, ignore_errors=True)


def test_two_ranks_form_one_cluster_and_leave_nothing(tmp_path):
    """Rank 0 starts the head and waits for rank 1 (here: a second raylet on this host) to
    join; when rank 0 is done it releases rank 1; both stop their Ray by PID. Rank 1 gets its
    SIGTERM while it tears down (scancel signals each rank's step on its own, often after the
    head has released the others): the teardown still runs to its end."""
    import tempfile

    short = tempfile.mkdtemp(prefix="r360t-", dir="/tmp")
    code = """
import os, signal, sys
from pathlib import Path
from reasoning360.ray import bootstrap
from reasoning360.ray.bootstrap import RayCluster, cluster_pids
rank = int(sys.argv[1])
if rank == 1:
    def term(signum, frame):          # as the job and the probe turn scancel's TERM
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, term)
    disconnect = bootstrap._shutdown_driver
    def disconnect_then_term():       # the teardown's first step, in its own thread
        os.kill(os.getpid(), signal.SIGTERM)
        disconnect()
    bootstrap._shutdown_driver = disconnect_then_term
rc = RayCluster(key=f"two-{rank}", rank=rank, hosts=["node-a", "node-b"], shared_dir=Path(sys.argv[2]),
                num_cpus=1, join_timeout_s=120)
with rc:
    if rank == 0:
        import ray
        print("NODES", sum(n["Alive"] for n in ray.nodes()), flush=True)
    else:
        rc.wait_released()
        print("RELEASED", flush=True)
print("LEFT", sorted(cluster_pids(rc.temp_dir)), flush=True)
"""
    env = {**os.environ, "R360_RAY_TMP": short}
    worker = subprocess.Popen([sys.executable, "-c", code, "1", str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    head = subprocess.run([sys.executable, "-c", code, "0", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=240)
    out, _ = worker.communicate(timeout=60)
    assert "NODES 2" in head.stdout and "LEFT []" in head.stdout, head.stdout + head.stderr
    assert "RELEASED" in out and "LEFT []" in out and "Ray stopped on" in out, out
    import shutil

    shutil.rmtree(short, ignore_errors=True)


@pytest.mark.slurm
def test_grpo_with_ray_rollout_workers_then_scancel_leaves_nothing(slurm_cluster, tmp_path):
    p = sweep_cmd(tmp_path, *TINY, "launcher=slurm", "grid.backtracks=[0]", "rollout.workers=2",
                  "rl.steps=300", "rl.save_every=1000")
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = tmp_path / "sweeps" / "smoke"
    try:
        plan, store, _ = sweepdir.load(sweep)
        sid = plan.points[0].stages["rl"]
        ref, arr = JobsFile(sweep).latest(sid)
        log = sweep / "slurm" / "logs" / f"{ref}_0_log.out"

        def stepping():
            row = last_row(store.stage(sid).path)
            return row is not None and row["step"] >= 2 and log.exists() and "[ray-rollout] 2 rollout workers up" in log.read_text()
        wait_for(stepping, 300, 1, "GRPO steps with 2 Ray rollout workers")
        text = log.read_text()
        assert "Ray cluster up at" in text
        actors = [int(x) for x in re.search(r"rollout workers up \(pids ([\d, ]+)\)", text).group(1).split(", ")]
        (temp,) = RAY_TMP.glob(f"{ref}.*")       # the job's Ray temp dir: <job>_<task>.<pid>
        ray_pids = cluster_pids(temp)
        job_pids = _procs_matching(arr["array_file"])
        assert set(actors) <= ray_pids and len(ray_pids) >= 4 and job_pids, (actors, ray_pids, job_pids)

        slurm_query.scancel([arr["job_id"]])
        everything = set(actors) | ray_pids | set(job_pids)
        t0 = time.time()
        wait_for(lambda: not any(_alive(x) for x in everything), 60, 0.5, "the job's processes to go")
        gone_s = time.time() - t0
        # every reaper of this job (its parent is the job process that started Ray, not always job_pids[0])
        wait_for(lambda: not _procs_matching(f" {temp.name}"), 30, 0.5, "the job's reaper to exit")
        assert not cluster_pids(temp), "a Ray process of the cancelled job survived"
        assert not _procs_matching(arr["array_file"])
        assert not temp.exists()
        text = log.read_text()
        assert "terminated (SIGTERM)" in text and "Ray stopped" in text, text[-1500:]
        assert gone_s < 15          # torn down by the job itself, not by Slurm's KillWait SIGKILL
        row = wait_for(lambda: next((r for r in status.snapshot(sweep).rows
                                     if r.role == "rl" and r.state == "interrupted"
                                     and "cancelled" in r.reason), None), 30, 1,
                       "status to show the RL stage interrupted (cancelled)")
        assert row.step is not None and row.step >= 2
    finally:
        cancel_sweep(sweep)
