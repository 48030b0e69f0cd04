"""Sweeps on the virtual multi-node cluster (fixture `virtual_cluster`, tests/slurm_cluster.py):
`python sweep.py +grid=smoke launcher=slurm cluster=virtual`, with RL over three nodes (the
trainer on the first, Ray rollout workers on the other two), against the local launcher; and
what happens to a multi-node stage when it is preempted, loses a node, is resubmitted."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from reasoning360.launchers import status
from reasoning360.launchers.slurm import query as slurm_query
from reasoning360.launchers.slurm.jobs import JobsFile
from reasoning360.launchers.slurm.query import expand_nodelist
from reasoning360.sweep import sweepdir
from reasoning360.sweep.store import StageDir
from reasoning360.tracking import last_row

from slurm_cluster import TINY, cancel_sweep, r360, sweep_cmd, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

RL_KEYS = ("reward_mean", "reward_std", "grad_norm", "format_rate", "response_length_mean", "accuracy")


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _metrics(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _hosts(sd: StageDir) -> list[str]:
    return [a["host"] for a in sd.attempts()]


def _log(sweep: Path, ref: str, rank: int = 0) -> str:
    return (sweep / "slurm" / "logs" / f"{ref}_{rank}_log.out").read_text()


def test_smoke_sweep_over_three_nodes_matches_the_local_launcher(virtual_cluster, tmp_path, monkeypatch):
    """GRPO with rollout.workers=2 spread over the two nodes that do not host the trainer:
    the weights cross the network to both every step, and the sweep's results (and every
    step's rollout statistics) equal the local launcher's for the same seed, though one SFT
    task was preempted and requeued on the way (it then shows as done, not preempted)."""
    vc = virtual_cluster
    vc.use(monkeypatch)
    # 60 SFT steps: enough that GRPO's first step has a non-zero gradient, so the second step's
    # rollouts depend on weights the workers got over the network
    over = [*TINY, "rollout.workers=2", "sft.max_steps=60", "sft.save_every=100"]
    rx0 = {n: vc.rx_bytes(n) for n in vc.nodes}
    p = sweep_cmd(tmp_path / "slurm", *over, "launcher=slurm", "cluster=virtual", env=vc.client_env())
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = tmp_path / "slurm" / "sweeps" / "smoke"
    try:
        plan, store, _ = sweepdir.load(sweep)
        # one SFT task is preempted (USR2) midway: it requeues, resumes, and must still end
        # exactly where the uninterrupted local run ends; and show as done, not preempted
        sft0 = plan.points[0].stages["sft"]
        sft_ref = JobsFile(sweep).latest(sft0)[0]

        def sft_step() -> int:
            row = last_row(store.stage(sft0).path)
            return row["step"] if row else 0
        wait_for(lambda: 3 <= sft_step() <= 40, 400, 0.2, "the first SFT task to be a few steps in")
        slurm_query.run(["scancel", "--signal=USR2", sft_ref])
        loc = sweep_cmd(tmp_path / "local", *over, timeout=900)      # the reference, meanwhile
        assert loc.returncode == 0, loc.stdout[-2000:] + loc.stderr[-2000:]

        def all_done():
            s = status.snapshot(sweep)
            return s if s.counts == {"done": len(plan.stages)} else None
        wait_for(all_done, 900, 2, "every stage of the sweep on the virtual cluster")
        res = sweep / "results.csv"
        wait_for(lambda: res.exists() and all(r["state"] == "done" for r in _rows(res)), 180, 2,
                 "the analysis job's results.csv")
        # the same results table as the local launcher
        cols = ["point", "task", "k", "seed", "sft_acc", "rl_acc", "rl_format", "rl_tokens", "rl_backtracks"]
        ref = _rows(tmp_path / "local" / "sweeps" / "smoke" / "results.csv")
        assert [{k: r[k] for k in cols} for r in _rows(res)] == [{k: r[k] for k in cols} for r in ref]
        _, lstore, _ = sweepdir.load(tmp_path / "local" / "sweeps" / "smoke")
        rl = [sid for sid, st in plan.stages.items() if st.kind == "rl"]
        for sid, st in plan.stages.items():
            if st.kind == "sft":
                assert store.stage(sid).summary()["final_loss"] == lstore.stage(sid).summary()["final_loss"]
        for sid in rl:     # every step's rollout statistics, not only the last ones
            ours = [{k: m.get(k) for k in RL_KEYS} for m in _metrics(store.stage(sid).path / "metrics.jsonl")]
            theirs = [{k: m.get(k) for k in RL_KEYS} for m in _metrics(lstore.stage(sid).path / "metrics.jsonl")]
            assert ours == theirs, sid
        assert any(m.get("grad_norm") for sid in rl for m in _metrics(store.stage(sid).path / "metrics.jsonl"))

        # the requeued-then-completed SFT task: done (resumed, not rerun), Slurm says COMPLETED
        att = [a["status"] for a in store.stage(sft0).attempts()]
        assert att == ["preempted", "done"]
        row = next(r for r in status.snapshot(sweep).rows if r.stage_id == sft0)
        assert (row.state, row.job) == ("done", sft_ref)
        assert slurm_query.sacct([sft_ref.split("_")[0]])[sft_ref].state == "COMPLETED"
        sft_log = _log(sweep, sft_ref)
        assert "USR2" in sft_log and "requeued" in sft_log
        sft_steps = [m["step"] for m in _metrics(store.stage(sft0).path / "metrics.jsonl")]
        assert sft_steps == list(range(1, 61))         # contiguous across the requeue, no step twice

        # stages placed on different nodes; each RL stage's trainer on the first of its 3 nodes
        hosts = {sid: _hosts(store.stage(sid)) for sid in plan.stages}
        assert len({h for hs in hosts.values() for h in hs}) >= 2, hosts
        steps = next(int(o.split("=")[1]) for o in over if o.startswith("rl.steps="))
        params = store.stage(rl[0]).summary()["params"]
        for sid in rl:
            assert hosts[sid] == ["vnode1"]
            ref_ = JobsFile(sweep).latest(sid)[0]
            log = _log(sweep, ref_)
            assert "all 3 node(s) joined" in log and "vnode1 10.231.0.11 (0 CPU, head)" in log, log[-3000:]
            assert "[ray-rollout] 2 rollout workers up" in log
            assert f"closing 2 workers after {steps} weight broadcast(s)" in log      # one per step
            acct = slurm_query.sacct([ref_.split("_")[0]])[ref_]
            assert acct.nodes == "vnode[1-3]"
        # the weights went over the wire to both worker nodes: the initial model and one
        # broadcast per step, per RL stage, each at least 4 bytes per parameter
        for node in ("vnode2", "vnode3"):
            assert vc.rx_bytes(node) - rx0[node] >= len(rl) * (steps + 1) * 4 * params, node
    finally:
        cancel_sweep(sweep)


def test_multinode_stage_preempted_then_loses_a_node_then_resubmitted(virtual_cluster, tmp_path, monkeypatch):
    """A 2-node GRPO stage (rollout workers on the second node) with launcher.max_requeue=1:
    USR2 requeues and resumes it; a node powered off in its next run fails it at once (the
    requeue budget is spent) and the job cancels itself, leaving no Ray or engine process on
    any node; `r360 status` names the node and why, and shows the dependent eval as failed (its
    dependency can never be satisfied), not pending; `r360 resubmit --failed` completes it
    from its checkpoint, with no DONE stage rerun and no metrics row twice."""
    vc = virtual_cluster
    vc.use(monkeypatch)
    steps = 24         # enough that the resumed run is still going when the node is powered off
    over = [*TINY, "grid.backtracks=[0]", "rollout.workers=2", f"rl.steps={steps}", "rl.save_every=1000",
            "cluster.resources.rl.nodes=2", "launcher.max_requeue=1", "launcher.preempt_grace_s=30"]
    p = sweep_cmd(tmp_path, *over, "launcher=slurm", "cluster=virtual", env=vc.client_env())
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = tmp_path / "sweeps" / "smoke"
    try:
        plan, store, _ = sweepdir.load(sweep)
        pp = plan.points[0]
        sid = pp.stages["rl"]
        sd = store.stage(sid)
        ref = JobsFile(sweep).latest(sid)[0]

        def step() -> int:
            row = last_row(sd.path)
            return row["step"] if row else 0

        def attempts() -> list[str]:
            return [a["status"] for a in sd.attempts()]

        # 1. USR2 preemption of the 2-node job: checkpoint, requeue, resume (rank 1 and the Ray
        #    processes of both nodes get the signal too, and must survive it)
        wait_for(lambda: step() >= 1, 400, 0.5, "the 2-node GRPO stage to be a step in")
        slurm_query.run(["scancel", "--signal=USR2", ref])
        wait_for(lambda: attempts()[:1] == ["preempted"], 120, 0.5, "the preemption")
        at = step()
        wait_for(lambda: step() >= at + 2, 300, 0.5, "the requeued run to resume")
        log = _log(sweep, ref)
        assert "USR2" in log and "requeued" in log and "restart 1)" in log and " lost" not in log, log[-3000:]

        # 2. the job's second node powered off mid-run: the job fails at once (max_requeue=1 is spent)
        head, other = expand_nodelist(slurm_query.squeue([ref.split("_")[0]])[ref].nodes)
        assert not sd.is_done() and step() < steps - 4, "the stage ran out of steps before the node was lost"
        t0 = time.time()
        vc.power_off(other)
        wait_for(lambda: sd.failure(), 60, 0.5, "the stage to be marked failed")
        detected_s = time.time() - t0
        fail = sd.failure()
        assert fail.startswith(f"node {other} (rank 1) lost: its job step ended"), fail
        assert "not requeued (restart 1, launcher.max_requeue=1)" in fail
        assert detected_s < 20        # the watchdog, not Slurm's SlurmdTimeout (20 s here, 300 by default)
        # the job ended itself: nothing of it left on the node that is still up (Slurm keeps the
        # job COMPLETING until it declares vnode2 dead; status does not wait for that)
        wait_for(lambda: not _job_processes(vc, head), 30, 0.5, f"no Ray or engine process left on {head}")

        def settled():
            rows = {r.role: r for r in status.snapshot(sweep).rows}
            return rows if rows["rl"].state == rows["rl_eval"].state == "failed" else None
        rows = wait_for(settled, 120, 1, "status to show the stage and its dependent failed")
        assert rows["rl"].reason.startswith(f"node {other} (rank 1) lost: its job step ended")
        assert rows["rl_eval"].reason == status.NEVER
        st = r360("status", str(sweep), "--plain")
        assert st.returncode == 1 and f"node {other} (rank 1) lost" in st.stdout, st.stdout

        # Slurm keeps the job COMPLETING until it declares the dead node down (SlurmdTimeout),
        # and the launcher counts a COMPLETING job as queued: resubmit after that
        def over():
            t = slurm_query.squeue([ref.split("_")[0]]).get(ref)
            return t is None or t.state not in slurm_query.LIVE
        wait_for(over, 180, 1, "Slurm to end the job (it waits for the dead node)")

        # 3. resubmit --failed: only the failed stage and its dependent; nothing DONE reruns
        done_before = {s: ((store.stage(s).path / "DONE").read_text(),
                           (store.stage(s).path / "attempts.jsonl").read_text()) for s in plan.stages
                       if store.stage(s).is_done()}
        assert set(done_before) == {s for r, s in pp.stages.items() if r not in ("rl", "rl_eval")}
        assert {"data", "traces", "sft", "sft_eval"} < set(pp.stages)
        rs = r360("resubmit", str(sweep), "--failed")
        assert rs.returncode == 0, rs.stdout + rs.stderr
        new = JobsFile(sweep).submissions[-1]["arrays"]
        assert sorted(s for a in new for s in a["tasks"].values()) == sorted([sid, pp.stages["rl_eval"]])
        ref2 = JobsFile(sweep).latest(sid)[0]
        vc.boot(other)                # the node is repaired meanwhile
        assert not _job_processes(vc, other)
        wait_for(lambda: status.snapshot(sweep).counts == {"done": len(plan.stages)}, 600, 2,
                 "every stage done")
        row = next(r for r in status.snapshot(sweep).rows if r.role == "rl")
        assert (row.state, row.job) == ("done", ref2)
        assert attempts() == ["preempted", "failed", "done"]
        rows_ = _metrics(sd.path / "metrics.jsonl")
        assert [r["step"] for r in rows_] == list(range(0, steps + 1))      # contiguous, no row twice
        for s, (stamp, att) in done_before.items():
            assert (store.stage(s).path / "DONE").read_text() == stamp
            assert (store.stage(s).path / "attempts.jsonl").read_text() == att
    finally:
        cancel_sweep(sweep)
        for node in vc.nodes:         # leave every node up for the next test
            if not any("vm-init" in _cmd(p) for p in vc.pids(node)):
                vc.boot(node)


def _log_or_empty(sweep: Path, ref: str) -> str:
    try:
        return _log(sweep, ref)
    except OSError:
        return ""


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _job_processes(vc, node: str) -> list[str]:
    """Ray and job processes on a node (not its init, slurmd or an idle slurmstepd)."""
    out = []
    for pid in vc.pids(node):
        cmd = _cmd(pid)
        if "vm-init.py" in cmd or not cmd or cmd.startswith("srun "):
            continue
        if any(w in cmd for w in ("raylet", "gcs_server", "ray::", "/ray/", "reasoning360.")):
            out.append(cmd[:100])
    return out
