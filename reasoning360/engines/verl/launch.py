"""Where and how verl runs: the allocation, the job's Ray head, the command line, the process.

- SFT: verl's FSDP/Megatron SFT trainer under torchrun on every node of the job
  (`srun --overlap --ntasks-per-node=1` when the job has more than one node).
- GRPO and eval: `python -m verl.trainer.main_ppo` as the driver on the head of the job's Ray
  cluster; RAY_ADDRESS (which the job's Ray bootstrap exports) makes verl's `ray.init()` join it
  instead of starting its own.
- The process runs in its own process group; preemption (ctx.preempt, set by the runner on
  USR2/TERM) stops it; verl resumes from its newest checkpoint next time (resume_mode=auto).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

SFT_MODULE = "verl.trainer.sft_trainer"
PPO_MODULE = "verl.trainer.main_ppo"


# ---------------------------------------------------------------------------- allocation

def _int_env(*names: str) -> int | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            m = re.search(r"(\d+)(?:\(x\d+\))?$", v.split(",")[0])
            if m:
                return int(m.group(1))
    return None


def allocation(vcfg: dict[str, Any]) -> tuple[int, int]:
    """(nodes, GPUs per node): the Slurm allocation when inside a job, else engine.verl's."""
    nnodes = _int_env("SLURM_JOB_NUM_NODES", "SLURM_NNODES") or int(vcfg["nnodes"])
    gpus = _int_env("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE")
    if not gpus and os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES"):
        gpus = len([d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()])
    return nnodes, gpus or int(vcfg["n_gpus_per_node"])


def head_host() -> str:
    """The host torchrun's rendezvous runs on: MASTER_ADDR, the Ray head, the job's first node."""
    if os.environ.get("MASTER_ADDR"):
        return os.environ["MASTER_ADDR"]
    addr = os.environ.get("RAY_ADDRESS")
    if addr and "://" not in addr and ":" in addr:
        return addr.rsplit(":", 1)[0]
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if nodelist:
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=10)
            if out.returncode == 0 and out.stdout.split():
                return out.stdout.split()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return socket.gethostname()


# ---------------------------------------------------------------------------- commands

def sft_command(overrides: list[str], *, nnodes: int, gpus_per_node: int, python: str = "python",
                port: int = 29500, head: str | None = None, job_id: str | None = None,
                env: dict[str, str] | None = None) -> list[str]:
    prefix = ["env", *[f"{k}={v}" for k, v in (env or {}).items()]] if env else []
    run = [python, "-m", "torch.distributed.run", f"--nproc_per_node={gpus_per_node}"]
    if nnodes <= 1:
        run += ["--standalone", "--nnodes=1"]
        return prefix + run + ["-m", SFT_MODULE, *overrides]
    run += [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={head or head_host()}:{port}",
            f"--rdzv_id={job_id or os.environ.get('SLURM_JOB_ID', 'r360')}"]
    srun = ["srun", "--overlap", f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1"]
    return prefix + srun + run + ["-m", SFT_MODULE, *overrides]


def ppo_command(overrides: list[str], *, python: str = "python", env: dict[str, str] | None = None) -> list[str]:
    prefix = ["env", *[f"{k}={v}" for k, v in (env or {}).items()]] if env else []
    return prefix + [python, "-m", PPO_MODULE, *overrides]


def write_script(path: Path, cmd: list[str] | list[list[str]], cwd: Path | None = None, note: str = "") -> None:
    """The exact command line, runnable by hand (bash verl_cmd.sh); several (an eval stage's
    runs, one per step and protocol) run one after the other."""
    from ...atomic import write_text

    cmds = cmd if cmd and isinstance(cmd[0], list) else [cmd]
    lines = ["#!/usr/bin/env bash", f"# {note}".rstrip(), "set -euo pipefail"]
    if cwd is not None:
        lines.append(f"cd {shlex.quote(str(cwd))}")
    for one in cmds:
        body, line = [], ""
        for p in (shlex.quote(c) for c in one):     # one override per line keeps it readable
            if line and (p.startswith("'") or "=" in p or p.startswith("-")):
                body.append(line)
                line = p
            else:
                line = f"{line} {p}".strip()
        body.append(line)
        lines.append(" \\\n  ".join(body))
    write_text(path, "\n".join(lines) + "\n")
    os.chmod(path, 0o755)


# ---------------------------------------------------------------------------- the process

class VerlFailed(RuntimeError):
    pass


def run_process(cmd: list[str], *, log_path: Path, env: dict[str, str] | None = None,
                cwd: Path | None = None, poll: Callable[[], Any] | None = None,
                should_stop: Callable[[], bool] | None = None, poll_s: float = 2.0,
                echo: bool = True, grace_s: float = 60.0) -> int | None:
    """Run `cmd` in its own process group, tee its output to `log_path` (and stdout), call
    `poll()` every `poll_s` seconds. Returns the exit code, or None if `should_stop()` asked to
    stop it (it is then terminated: TERM, then KILL after `grace_s`).

    Every process it starts carries a marker in its environment (RUN_MARK); when it has ended,
    what is left with that marker is stopped — the Ray cluster a verl driver started for itself
    (no RAY_ADDRESS) lives in other sessions and outlives a terminated driver. Processes of a
    job's Ray cluster do not carry it (its raylet started them); the job's bootstrap stops those."""
    import uuid

    log_path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    full_env = {**os.environ, **(env or {}), RUN_MARK: token}
    with open(log_path, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)[:2000]}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                                cwd=str(cwd) if cwd else None, start_new_session=True,
                                preexec_fn=_ignore_preemption_signals)

        def pump() -> None:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.readline(), b""):
                log.write(chunk)
                log.flush()
                if echo:
                    try:
                        sys.stdout.write(chunk.decode("utf-8", "replace"))
                        sys.stdout.flush()
                    except (ValueError, OSError):
                        pass

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        stopped = False
        try:
            while proc.poll() is None:
                if poll is not None:
                    poll()
                if should_stop is not None and should_stop():
                    stopped = True
                    terminate(proc, grace_s)
                    break
                time.sleep(poll_s)
        except BaseException:
            terminate(proc, grace_s)
            raise
        finally:
            reap(token)          # first: a leftover holding the pipe would keep the reader waiting
            t.join(timeout=10)
        if poll is not None:
            poll()
        return None if stopped else proc.returncode


RUN_MARK = "R360_VERL_RUN"


def _ignore_preemption_signals() -> None:
    """verl and everything it starts ignore USR1/USR2 (inherited across exec): Slurm sends USR2 to
    every process of the job step, and a verl driver, torchrun rank or Ray worker would die of it.
    The stage process acts on it (ctx.preempt) and stops verl with TERM."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def reap(token: str, grace_s: float = 10.0) -> list[int]:
    """TERM, then KILL, every process of this user whose environment holds RUN_MARK=token."""
    marker = f"{RUN_MARK}={token}".encode()

    def marked() -> list[int]:
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                with open(f"/proc/{d}/environ", "rb") as fh:
                    if marker in fh.read().split(b"\0"):
                        out.append(int(d))
            except OSError:
                continue
        return out

    pids = marked()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace_s
    while time.time() < deadline and marked():
        time.sleep(0.5)
    for pid in marked():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def terminate(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def log_tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-n:])
