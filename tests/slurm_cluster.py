"""A real single-node Slurm cluster for the tests (pytest fixture `slurm_cluster`).

Session-scoped: started once by reasoning360/launchers/slurm/localslurm/start-slurm.sh (root on
Debian; it apt-installs slurm-wlm, munge and mariadb when missing), stopped at the end by
stop-slurm.sh, which kills exactly the daemons it started, by PID. A cluster that was
already up when the session began is used and left running. Anywhere else the tests that
need it are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import subprocess
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "reasoning360" / "launchers" / "slurm" / "localslurm"
BASE = os.environ.get("SLURM_BASE", "/tmp/local-slurm")


def _up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(s.strip() in ("idle", "mixed", "allocated", "completing") for s in out.splitlines())


def _accounting_ok() -> bool:
    """sacct answers (slurmdbd and its database are alive): status and the tests read it."""
    try:
        return subprocess.run(["sacct", "-n", "-X", "-S", "now", "-o", "JobID"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _why_not() -> str | None:
    if os.environ.get("R360_SKIP_SLURM"):
        return "R360_SKIP_SLURM is set"
    if _up():
        return None
    if os.geteuid() != 0:
        return "the local Slurm cluster needs root (start-slurm.sh installs and runs slurmctld/slurmd)"
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "the local Slurm cluster recipe needs Debian (apt-get) when Slurm is not installed"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    started = False
    node_was_up = _up()
    if not node_was_up or not _accounting_ok():
        # start-slurm.sh is idempotent: it starts only the daemons that are not running
        t0 = time.time()
        proc = subprocess.run(["bash", str(SCRIPTS / "start-slurm.sh")], capture_output=True, text=True,
                              env={**os.environ, "SLURM_BASE": BASE}, timeout=900)
        if proc.returncode != 0 or not _up():
            pytest.skip(f"could not start the local Slurm cluster: {(proc.stdout + proc.stderr)[-800:]}")
        started = not node_was_up     # stop at the end only a cluster this session brought up
        print(f"\n[slurm_cluster] started in {time.time() - t0:.1f}s")
    yield {"partition": "debug", "base": BASE, "started": started}
    if started:
        subprocess.run(["bash", str(SCRIPTS / "stop-slurm.sh")], capture_output=True, text=True,
                       env={**os.environ, "SLURM_BASE": BASE}, timeout=120)


# --------------------------------------------------------------------------- helpers for the tests

ROOT = Path(__file__).resolve().parents[1]
# the smoke grid made tiny: a whole point takes ~1 min of jobs on 2 cores
TINY = ["+grid=smoke", "data.sft_size=64", "data.train_size=32", "data.val_size=8", "data.test_size=16",
        "pretrain.attempts=1", "pretrain.train.max_steps=2", "pretrain.train.batch_size=8",
        "sft.max_steps=4", "sft.save_every=2", "rl.steps=2", "rl.save_every=1", "rl.batch_size=4",
        "rl.mini_batch_size=4", "eval.max_new_tokens=32", "rl.rollout.max_new_tokens=32", "engine.threads=1"]


def sweep_cmd(root: Path, *overrides: str, env: dict | None = None, timeout: float = 300):
    """`python sweep.py ...` with R360_ROOT=root; returns the CompletedProcess."""
    e = {**os.environ, "R360_ROOT": str(root), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "sweep.py"), *overrides], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def r360(*args: str, root: Path | None = None, timeout: float = 120):
    e = {**os.environ, "COLUMNS": "200"}
    if root is not None:
        e["R360_ROOT"] = str(root)
    return subprocess.run([sys.executable, "-m", "reasoning360.cli", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def wait_for(pred, timeout: float, interval: float = 1.0, what: str = "condition"):
    t0 = time.time()
    while True:
        v = pred()
        if v:
            return v
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def cancel_sweep(sweep_dir: Path) -> None:
    if (Path(sweep_dir) / "jobs.json").exists():
        r360("cancel", str(sweep_dir))
