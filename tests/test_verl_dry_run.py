"""`sweep.dry_run=true` with a verl engine shows the exact verl command lines (no verl needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from compose import fake_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Plan against the generic GPU profile as on a login node without Slurm here (the local test
# cluster has no GPU partition to check the profile against).
SNIPPET = """
import runpy, sys
from reasoning360.launchers.slurm import query as slurm_query
slurm_query.available = lambda: False
sys.argv = ["sweep.py", "+grid=backtrack", "scale=paper", "engine=verl_fsdp", "launcher=slurm",
            "cluster=generic_gpu", "model.path=" + sys.argv[1], "sweep.dry_run=true"]
runpy.run_path("sweep.py", run_name="__main__")
"""


def test_dry_run_prints_verl_commands(tmp_path):
    model = fake_checkpoint(tmp_path / "Qwen2.5-3B-Instruct")
    env = {**os.environ, "R360_ROOT": str(tmp_path / "root"), "COLUMNS": "400"}
    out = subprocess.run([sys.executable, "-c", SNIPPET, str(model)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "-m verl.trainer.sft_trainer" in text and "optim.lr=1e-05" in text
    assert "-m verl.trainer.main_ppo" in text and "algorithm.adv_estimator=grpo" in text
    assert "data.train_batch_size=128" in text and "actor_rollout_ref.rollout.name=vllm" in text
    assert "dry run: nothing submitted" in text
    assert not (tmp_path / "root" / "store").exists()
