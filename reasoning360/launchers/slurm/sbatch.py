"""sbatch files and their submission, through submitit.

The text of every job is written by submitit's own sbatch writer
(`submitit.slurm.slurm._make_sbatch_string`: `#SBATCH` lines, `--signal=USR2@N`, the site's
setup lines, `srun --unbuffered ... <command>`), and submitted by a `SlurmExecutor` (its
`_submit_command`, one sbatch call per array). The command is not submitit's pickle runner
but `python -m reasoning360.launchers.slurm.job ARRAY.json`, which finds its stage from
SLURM_ARRAY_TASK_ID in a small JSON file: so a 1,000-task array costs one sbatch call and no
pickles, and the files `r360 render` writes are the files the launcher submits, runnable by
hand. Dependencies are given on the sbatch command line (job ids exist only at submit time),
so the file text does not depend on them.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from reasoning360.launchers.slurm.resources import Resources, gres_flags
from reasoning360.launchers.slurm.query import CALLS


def python_cmd(c: dict[str, Any]) -> str:
    py = (c.get("cluster") or {}).get("python") or (c.get("launcher") or {}).get("python")
    return py or shlex.quote(sys.executable)


def setup_lines(c: dict[str, Any]) -> list[str]:
    cl = c.get("cluster") or {}
    lines = [str(x) for x in (cl.get("setup") or [])]
    for k, v in (cl.get("env") or {}).items():
        lines.append(f"export {k}={shlex.quote(str(v))}")
    iface = cl.get("network_interface")
    if iface:
        lines.append(f"export GLOO_SOCKET_IFNAME={shlex.quote(iface)} NCCL_SOCKET_IFNAME={shlex.quote(iface)} "
                     f"R360_NET_IFACE={shlex.quote(iface)}")
    lines.append("export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1")
    return lines


def params(c: dict[str, Any], res: Resources, *, job_name: str, array: str | None,
           n_tasks: int | None) -> dict[str, Any]:
    """submitit SlurmExecutor parameters of one job (array when `array` is given)."""
    cl, la = c.get("cluster") or {}, c.get("launcher") or {}
    extra: dict[str, Any] = {"requeue": True}
    if array is not None:
        extra["array"] = array
    extra.update(cl.get("additional_sbatch") or {})
    p: dict[str, Any] = dict(
        job_name=job_name, partition=res.partition, time=res.time_minutes, nodes=res.nodes,
        ntasks_per_node=1, cpus_per_task=res.cpus, signal_delay_s=int(la.get("signal_delay_s") or 90),
        stderr_to_stdout=True, wckey="r360", setup=setup_lines(c), additional_parameters=extra,
        srun_args=list(((cl.get("container") or {}).get("flags")) or []), use_srun=True)
    if res.mem_gb is not None:
        p["mem"] = f"{int(round(res.mem_gb * 1024))}M"
    p.update(gres_flags(res, cl))
    if res.constraint:
        p["constraint"] = res.constraint
    for k in ("account", "qos"):
        if cl.get(k):
            p[k] = cl[k]
    if cl.get("exclusive"):
        p["exclusive"] = True
    if n_tasks is not None:
        p["map_count"] = n_tasks
    return p


def text(folder: Path, command: str, p: dict[str, Any]) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=command, folder=str(folder), **p)


def log_path(folder: Path, job_id: str, task: int | None, rank: int = 0) -> Path:
    """Where submitit's sbatch text sends a task's output (stdout and stderr together)."""
    jid = job_id if task is None else f"{job_id}_{task}"
    return Path(folder) / f"{jid}_{rank}_log.out"


def submit(folder: Path, command: str, p: dict[str, Any], dependency: str = "") -> tuple[str, Path]:
    """Submit one job through submitit's SlurmExecutor; returns (job id, sbatch file)."""
    from submitit import SlurmExecutor

    class _Executor(SlurmExecutor):
        def _make_submission_command(self, submission_file_path):
            extra = [f"--dependency={dependency}", "--kill-on-invalid-dep=no"] if dependency else []
            return ["sbatch", *extra, str(submission_file_path)]

    ex = _Executor(folder=str(folder))
    q = dict(p)
    map_count = q.pop("map_count", None)
    ex.update_parameters(**q)
    if map_count is not None:
        ex.parameters["map_count"] = map_count
    CALLS["sbatch"] += 1
    job = ex._submit_command(command)
    return str(job.job_id), Path(job.paths.submission_file)
