"""`engine=verl_fsdp` for real through the local Slurm cluster: one smoke point as job arrays, verl's
SFT trainer under torchrun in its job, verl's GRPO loop (main_ppo) joining the job's own Ray cluster
(RAY_ADDRESS from the Ray bootstrap) with vLLM's CPU build serving the rollouts; USR2 mid-GRPO ->
the stage stops verl, the job requeues itself -> verl resumes from its checkpoint
(resume_mode=auto) -> metrics contiguous, no step twice. No stand-in for verl, vLLM, Ray or Slurm.

Every job gets the local profile's resources (configs/cluster/local.yaml: the RL job 1 CPU): on
verl's CPU platform the worker bundle holds the job's only Ray CPU, and verl's helper actors
(vLLM's server, the agent-loop and reward workers) reserve none (engines/verl/cpu/patches.py).
~8-11 minutes.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from slurm_cluster import cancel_sweep, snapshot_or_raise, sweep_cmd, wait_for
from test_verl_cpu_e2e import SIZES
from test_verl_support import HAVE_VERL

pytestmark = [
    pytest.mark.slurm, pytest.mark.slow,
    pytest.mark.skipif(not HAVE_VERL or importlib.util.find_spec("vllm") is None,
                       reason="needs verl and vLLM's CPU build in this Python (bash scripts/install.sh test,verl)"),
]


def test_verl_point_through_slurm_with_usr2_requeue_and_resume(slurm_cluster, tmp_path):
    from reasoning360.launchers.slurm import query as slurm_query
    from reasoning360.launchers.slurm.jobs import JobsFile
    from reasoning360.sweep import sweepdir
    from reasoning360.tracking import read_metrics

    sizes = [s for s in SIZES if not s.startswith("rl.steps")] + ["rl.steps=4"]
    p = sweep_cmd(tmp_path, "+grid=smoke", "engine=verl_fsdp", "launcher=slurm", "cluster=local",
                  "cluster.resources.rl.mem_gb=8", "cluster.resources.sft.mem_gb=4",
                  "launcher.preempt_grace_s=90", "launcher.signal_delay_s=120", *sizes)
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = tmp_path / "sweeps" / "smoke"
    try:
        plan, store, _ = sweepdir.load(sweep)
        sid = plan.points[0].stages["rl"]
        rl = store.stage(sid)

        def failed():
            return snapshot_or_raise(sweep)

        def rl_step_logged():
            failed()
            rows = read_metrics(rl.path) if (rl.path / "metrics.jsonl").exists() else []
            return any(r["step"] >= 1 and "reward_mean" in r for r in rows)

        wait_for(rl_step_logged, 600, 2, "verl's first GRPO step inside the Slurm job")
        ref = JobsFile(sweep).latest(sid)[0]
        slurm_query.run(["scancel", "--signal=USR2", ref])

        def all_done():
            s = failed()
            return s if s.counts == {"done": len(plan.stages)} else None

        wait_for(all_done, 600, 3, "the requeued GRPO stage and the final eval")
        att = rl.attempts()
        assert [a["status"] for a in att] == ["preempted", "done"] and att[0]["job"] == att[1]["job"]
        rows = read_metrics(rl.path)
        assert [r["step"] for r in rows] == [1, 2, 3, 4]              # contiguous, no step twice
        assert rl.summary()["resumed_from"] >= 1
        logs = "".join(f.read_text() for f in (sweep / "slurm" / "logs").glob(f"{ref}_*"))
        assert "USR2" in logs and "requeued" in logs
        cmd = (rl.path / "verl_cmd.sh").read_text()
        assert "RAY_ADDRESS=" in cmd and "VERL_PLATFORM=cpu" in cmd   # joined the job's Ray cluster
        assert (rl.path / "model" / "config.json").exists()
        assert (rl.path / "models" / "step_00000001" / "config.json").exists()     # rl.eval_steps, across the requeue

        docs = [json.loads(f.read_text()) for f in (sweep / "slurm" / "arrays").glob("*.json")]
        array = next(d for d in docs if d.get("kind") == "rl")
        assert array["cpus"] == 1, array                # the profile's RL job: one CPU, verl included
    finally:
        cancel_sweep(sweep)
