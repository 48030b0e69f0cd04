"""A real single-node Slurm cluster for the tests (pytest fixture `slurm_cluster`).

Session-scoped: started once by reasoning360/launchers/slurm/localslurm/start-slurm.sh (root on
Debian; it apt-installs slurm-wlm, munge and mariadb when missing), stopped at the end by
stop-slurm.sh, which kills exactly the daemons it started, by PID. A cluster that was
already up when the session began is used and left running. Anywhere else the tests that
need it are skipped with the reason.
"""

from __future__ import annotations

import json
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


# --------------------------------------------------------------------------- the virtual multi-node cluster

VIRTUAL = SCRIPTS / "virtual-cluster.sh"
VBASE = os.environ.get("VCLUSTER_BASE", "/tmp/r360-vcluster")


class VirtualCluster:
    """Handle on the virtual multi-node cluster (localslurm/virtual-cluster.sh): its client
    environment, and the machines' power and cables, for the tests that break them."""

    def __init__(self, base: str, started: bool):
        self.base, self.started = base, started
        env = {}
        for line in Path(base, "env").read_text().splitlines():     # export K=V lines
            k, v = line.removeprefix("export ").split("=", 1)
            env[k] = v
        self.conf = env["SLURM_CONF"].strip("'\"")
        self.bin = str(Path(base) / "bin")
        self.nodes = Path(base, "nodes").read_text().split()
        self.partition = "virtual"

    def env(self, extra: dict | None = None) -> dict:
        """os.environ with this cluster's clients first on PATH (for subprocesses)."""
        return {**os.environ, **self.client_env(), **(extra or {})}

    def client_env(self) -> dict:
        """What a shell needs to use this cluster (what `virtual-cluster.sh env` exports)."""
        return {"SLURM_CONF": self.conf, "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def use(self, monkeypatch) -> None:
        """Point this test process's Slurm calls (slurm_query, ...) at the virtual cluster."""
        monkeypatch.setenv("SLURM_CONF", self.conf)
        monkeypatch.setenv("PATH", f"{self.bin}:{os.environ['PATH']}")

    def sh(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(VIRTUAL), *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "VCLUSTER_BASE": self.base})

    def on(self, node: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.sh("exec", node, *cmd, timeout=timeout)

    def pids(self, node: str) -> list[int]:
        """Host PIDs of every process on a machine (its network namespace)."""
        out = subprocess.run(["ip", "netns", "pids", f"r360vc-{node}"], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def node_of(self, pid: int) -> str | None:
        """The machine a (host) PID runs on."""
        for n in self.nodes + ["vhead"]:
            try:
                if os.stat(f"/run/netns/r360vc-{n}").st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino:
                    return n
            except OSError:
                continue
        return None

    def rx_bytes(self, node: str, iface: str = "eth0") -> int:
        """Bytes a machine has received on an interface (its side of the cable)."""
        out = subprocess.run(["ip", "-n", f"r360vc-{node}", "-s", "-j", "link", "show", iface], capture_output=True,
                             text=True, check=True).stdout
        return int(json.loads(out)[0]["stats64"]["rx"]["bytes"])

    def power_off(self, node: str) -> None:
        p = self.sh("kill", node)
        assert p.returncode == 0, p.stdout + p.stderr

    def boot(self, node: str) -> None:
        p = self.sh("boot", node, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr

    def link(self, node: str, state: str) -> None:
        p = self.sh("link", node, state)
        assert p.returncode == 0, p.stdout + p.stderr


def _virtual_up() -> bool:
    return subprocess.run(["bash", str(VIRTUAL), "status"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VCLUSTER_BASE": VBASE}).returncode == 0


def _virtual_why_not() -> str | None:
    if os.environ.get("R360_SKIP_SLURM"):
        return "R360_SKIP_SLURM is set"
    if os.geteuid() != 0:
        return "the virtual multi-node cluster needs root (network namespaces, bridges, Slurm daemons)"
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "the virtual multi-node cluster recipe needs Debian (apt-get installs Slurm 22.05)"
    for tool in ("ip", "nsenter", "unshare", "bridge"):
        if shutil.which(tool) is None:
            return f"the virtual multi-node cluster needs `{tool}` (iproute2 / util-linux)"
    return None


@pytest.fixture(scope="session")
def virtual_cluster():
    """A 3-node Slurm cluster of network/UTS/PID/mount namespaces on this machine, started once
    per session beside the single-node one (its own SLURM_CONF, ports, state, munge) and
    stopped at the end, if this session started it."""
    reason = _virtual_why_not()
    if reason:
        pytest.skip(reason)
    started = False
    if not _virtual_up():
        t0 = time.time()
        proc = subprocess.run(["bash", str(VIRTUAL), "start", "3"], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "VCLUSTER_BASE": VBASE})
        if proc.returncode != 0:
            subprocess.run(["bash", str(VIRTUAL), "stop"], capture_output=True, timeout=120,
                           env={**os.environ, "VCLUSTER_BASE": VBASE})
            pytest.skip(f"could not start the virtual cluster: {(proc.stdout + proc.stderr)[-800:]}")
        started = "already running" not in proc.stdout      # another session won the race
        print(f"\n[virtual_cluster] started in {time.time() - t0:.1f}s")
    vc = VirtualCluster(VBASE, started)
    yield vc
    if started:
        subprocess.run(["bash", str(VIRTUAL), "stop"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "VCLUSTER_BASE": VBASE})


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


def snapshot_or_raise(sweep: Path):
    """`r360 status` of a sweep; AssertionError with the status and the first failed stage's log
    when a stage failed (a wait then ends at once, saying why)."""
    from reasoning360.launchers import status

    s = status.snapshot(sweep)
    bad = [r for r in s.rows if r.state == "failed"]
    if bad:
        raise AssertionError(status.plain(s) + r360("logs", str(sweep), bad[0].point, "--stage",
                                                    bad[0].role).stdout[-4000:])
    return s


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
