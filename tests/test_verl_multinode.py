"""`engine=verl_fsdp` over two nodes of the virtual multi-node cluster (fixture `virtual_cluster`,
tests/slurm_cluster.py): `python sweep.py +grid=smoke engine=verl_fsdp launcher=slurm
cluster=virtual` with the SFT kinds (pretrain, SFT) and RL on 2 nodes each. verl's real SFT
trainer runs under torchrun on both nodes (srun --overlap, c10d rendezvous on the head, gloo on
the fabric interface), and verl's real main_ppo joins the job's Ray cluster of both nodes and
places one FSDP worker and one vLLM (CPU build) rollout server on each. Mid-GRPO the RL job gets
USR2 (as Slurm sends it before the time limit): the stage stops verl at a step boundary, the job
requeues itself, and verl resumes from its own two-shard checkpoint (resume_mode=auto) on the
requeued job's two nodes: metrics contiguous, no step twice. No stand-in for verl, vLLM, Ray,
torchrun or Slurm.

Each node gives Ray exactly one CPU (the profile's 1 CPU per job, and verl's stages keep none of
the head's out of Ray: engines.verl.driver_cpus), so verl's two placement groups (one "device",
a Ray CPU on its CPU platform, per node, trainer.nnodes=2) can only land one per node.
Measured: ~10 minutes on a quiet machine (two verl SFT runs and main_ppo's two start-ups
dominate); twice that while another heavy job shares the 2 cores.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import subprocess
from pathlib import Path

import pytest

from slurm_cluster import cancel_sweep, snapshot_or_raise, sweep_cmd, wait_for
from test_multinode import FABRIC, assert_clean, job_nodes
from test_verl_cpu_e2e import SIZES
from test_verl_support import HAVE_VERL

pytestmark = [
    pytest.mark.slurm, pytest.mark.multinode, pytest.mark.slow,
    pytest.mark.timeout(1800),      # ~10 min alone; twice that on a machine shared with another heavy job
    pytest.mark.skipif(not HAVE_VERL or importlib.util.find_spec("vllm") is None,
                       reason="needs verl and vLLM's CPU build in this Python (bash scripts/install.sh test,verl)"),
]

TWO_NODES = ["launcher.resources.sft.nodes=2", "cluster.resources.sft.mem_gb=3",    # pretrain and SFT
             "cluster.resources.rl.nodes=2", "cluster.resources.rl.mem_gb=4"]
RL_STEPS = 4        # USR2 lands after step 1: steps before and after the requeue
# USR2 -> the stage has preempt_grace_s to reach a step boundary (a verl step with its checkpoint
# takes ~20-40 s here); the scheduler's own USR2 comes signal_delay_s before a limit never reached
REQUEUE = ["launcher.preempt_grace_s=90", "launcher.signal_delay_s=120"]
# an actor's line in the driver's output: Ray names the node (ip=) only when it is not the driver's
ACTOR = re.compile(r"\((WorkerDict|vLLMHttpServer) pid=(\d+)(?:, ip=([\d.]+))?\)")


def _steps(vc, ref: str) -> list[list[str]]:
    """sacct's rows (JobID, NodeList, NTasks, State) for the steps of one array task."""
    out = subprocess.run(["sacct", "-n", "-P", "-j", ref, "-o", "JobID,NodeList,NTasks,State"], capture_output=True,
                         text=True, env=vc.env()).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_verl_sft_and_grpo_each_over_two_nodes_with_a_requeue(virtual_cluster, tmp_path, monkeypatch):
    from reasoning360.launchers.slurm import query as slurm_query
    from reasoning360.launchers.slurm.jobs import JobsFile
    from reasoning360.sweep import sweepdir
    from reasoning360.tracking import read_metrics

    vc = virtual_cluster
    vc.use(monkeypatch)
    # SFT keeps 2 checkpoints: the step-2 model RL starts from is then never pruned during the run
    # (the stage sets it aside by polling; verl's two ranks can save step 4 and prune step 2 between
    # two polls: the keep-after-prune path is test_verl_cpu_e2e's, on one node)
    sizes = [s for s in SIZES if not s.startswith(("rl.steps=", "sft.keep_checkpoints="))] + [
        f"rl.steps={RL_STEPS}", "sft.keep_checkpoints=2"]
    p = sweep_cmd(tmp_path, "+grid=smoke", "engine=verl_fsdp", "launcher=slurm", "cluster=virtual", *sizes,
                  *TWO_NODES, *REQUEUE, env=vc.client_env())
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = tmp_path / "sweeps" / "smoke"
    try:
        plan, store, _ = sweepdir.load(sweep)
        rl = store.stage(plan.points[0].stages["rl"])

        def rl_step_logged():
            snapshot_or_raise(sweep)
            rows = read_metrics(rl.path) if (rl.path / "metrics.jsonl").exists() else []
            return any(r["step"] >= 1 and "reward_mean" in r for r in rows)

        wait_for(rl_step_logged, 1200, 2, "verl's first GRPO step in the 2-node RL job")
        slurm_query.run(["scancel", "--signal=USR2", JobsFile(sweep).latest(rl.id)[0]])

        def all_done():
            s = snapshot_or_raise(sweep)
            return s if s.counts == {"done": len(plan.stages)} else None

        wait_for(all_done, 900, 3, "the requeued GRPO stage and the final eval on the virtual cluster")
        check_point(vc, sweep)
    finally:
        cancel_sweep(sweep)
    assert_clean(vc)


def check_point(vc, sweep: Path) -> None:
    """What the finished sweep shows (also runnable on a sweep made by hand)."""
    from reasoning360.launchers.slurm.jobs import JobsFile
    from reasoning360.launchers.slurm.query import expand_nodelist
    from reasoning360.sweep import sweepdir
    from reasoning360.tracking import read_metrics

    plan, store, _ = sweepdir.load(sweep)
    ids = plan.points[0].stages
    assert all(store.stage(sid).is_done() for sid in plan.stages)       # DONE markers, not only Slurm's word
    res = sweep / "results.csv"
    wait_for(lambda: res.exists(), 120, 2, "the analysis job's results.csv")
    with open(res) as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["state"] == "done" and 0 <= float(row["rl_acc"]) <= 1, row

    # ---- verl's SFT trainer, pretrain and SFT: torchrun on both nodes of the job
    for role, steps in (("base", 2), ("sft", 4)):
        sd = store.stage(ids[role])
        ref = JobsFile(sweep).latest(ids[role])[0]
        nodes = job_nodes(vc, ref)
        assert len(nodes) == 2 and sd.summary()["nnodes"] == 2, (role, nodes, sd.summary())
        cmd = (sd.path / "verl_cmd.sh").read_text()
        assert "srun \\\n  --overlap \\\n  --nodes=2 \\\n  --ntasks=2 \\\n  --ntasks-per-node=1" in cmd, cmd
        assert "--nnodes=2" in cmd and f"--rdzv_endpoint={nodes[0]}:" in cmd and "verl.trainer.sft_trainer" in cmd
        # the job body is step 0 (one task per node); torchrun's srun --overlap is step 1: both nodes
        rows = {r[0]: r for r in _steps(vc, ref)}
        step = rows[f"{ref}.1"]
        assert (expand_nodelist(step[1]), step[2:]) == (nodes, ["2", "COMPLETED"]), rows
        # one FSDP world of two ranks: each rank saved its own shard of the last checkpoint
        ckpt = sd.path / "checkpoints" / f"global_step_{steps}"
        assert sorted(f.name for f in ckpt.glob("model_world_size_*")) == [
            "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"], role
        m = read_metrics(sd.path)
        assert [r["step"] for r in m] == list(range(1, steps + 1)), role
        assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in m), m
        assert m[-1]["loss"] < m[0]["loss"], m          # the two ranks' all-reduced gradients train it
        assert (sd.path / "model" / "config.json").exists()     # verl's model merger across 2 shards

    # ---- verl's main_ppo in the job's Ray cluster of both nodes, requeued once by USR2
    sd = store.stage(ids["rl"])
    ref = JobsFile(sweep).latest(ids["rl"])[0]
    att = sd.attempts()
    assert [a["status"] for a in att] == ["preempted", "done"] and att[0]["job"] == att[1]["job"], att
    logs = sorted((sweep / "slurm" / "logs").glob(f"{ref}_*"))
    text = "".join(f.read_text(errors="replace") for f in logs)
    assert "USR2" in text and "requeued" in text, text[-3000:]
    head, second = job_nodes(vc, ref)        # the requeued run's nodes
    assert ("all 2 node(s) joined" in text and f"{head} {FABRIC[head]} (1 CPU, head), "
            f"{second} {FABRIC[second]} (1 CPU)" in text), text[-3000:]
    cmd = (sd.path / "verl_cmd.sh").read_text()
    assert f"RAY_ADDRESS={FABRIC[head]}:" in cmd and "trainer.nnodes=2" in cmd and "VERL_PLATFORM=cpu" in cmd
    # verl's workers and rollout servers: one of each on the head (the driver's node, no ip)
    # and one on the second node, by the driver's own output, in the run before and after USR2
    vlogs = [f.read_text(errors="replace") for f in sorted((sd.path / "verl_logs").glob("rl-*.log"))]
    assert len(vlogs) == 2, len(vlogs)
    for i, vlog in enumerate(vlogs):
        placed: dict[str, set] = {}
        for name, pid, ip in ACTOR.findall(vlog):
            placed.setdefault(name, set()).add((pid, ip))
        for name in ("WorkerDict", "vLLMHttpServer"):
            assert len(placed.get(name, ())) == 2 and sum(not ip for _, ip in placed[name]) == 1, (i, placed)
    assert f"ip={FABRIC[second]})" in vlogs[-1]
    ckpt = sd.path / "checkpoints" / f"global_step_{RL_STEPS}" / "actor"
    assert sorted(f.name for f in ckpt.glob("model_world_size_*")) == [
        "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]
    m = read_metrics(sd.path)
    assert [r["step"] for r in m] == list(range(1, RL_STEPS + 1))       # contiguous, no step twice
    for r in m:     # sane: rewards in the task's range, responses within the limit, finite losses
        assert 0 <= r["reward_mean"] <= 1 and 0 <= r["format_rate"] <= 1 and 0 <= r["accuracy"] <= 1, r
        assert 0 < r["response_length_mean"] <= 32 and math.isfinite(r["pg_loss"]), r
    summ = sd.summary()
    assert summ["nnodes"] == 2 and summ["device"] == "cpu" and summ["steps"] == RL_STEPS, summ
    assert summ["resumed_from"] >= 1, summ                      # from verl's own checkpoint
    assert (sd.path / "models" / "step_00000001" / "config.json").exists()   # rl.eval_steps, across the requeue
    assert (sd.path / "model" / "config.json").exists()
