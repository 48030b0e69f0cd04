"""Ask Slurm, once per question: `scontrol show config|partition|node`, `squeue --json`,
`sacct --json`. Everything is parsed into plain records here, so callers never see Slurm's
text or JSON formats.

Every command goes through `run`, which counts calls (`CALLS`): `r360 status` makes exactly
one squeue and one sacct call per refresh, whatever the size of the sweep, and the tests and
the bench check it.

Slurm 22.05 notes: `squeue --json` ignores -j/-u filters (it returns every job the controller
still remembers, finished ones included for MinJobAge), so the filtering is done here; a
pending array is one record whose `array_task_string` ("0-999%64", "1,5,7-9") names its
tasks; in sacct a pending array is one record whose `array.task` is a hex bitmap.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Iterable

CALLS: collections.Counter = collections.Counter()


class SlurmError(RuntimeError):
    """A Slurm command is missing or failed."""


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def run(argv: list[str], timeout: float = 60, check: bool = True) -> str:
    CALLS[argv[0]] += 1
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]}: command not found (is Slurm installed on this machine?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(argv[:3])}: no answer within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise SlurmError(f"{' '.join(argv[:3])} failed: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


# --------------------------------------------------------------------------- cluster shape

_KV = re.compile(r"(\w[\w:/.\-]*)=(.*?)(?= \w[\w:/.\-]*=|$)")


def parse_oneliner(line: str) -> dict[str, str]:
    """`scontrol -o show ...` line -> {key: value} (values may contain spaces)."""
    return {m.group(1): m.group(2).strip() for m in _KV.finditer(line.strip())}


def parse_minutes(value: str | None) -> int | None:
    """Slurm time ("UNLIMITED", "60", "2:00:00", "1-12:00:00", "30:00") -> minutes; None = no limit."""
    if value is None or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", ""):
        return None
    days = 0
    if "-" in value:
        d, value = value.split("-", 1)
        days = int(d)
    parts = [int(p) for p in value.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3], parts[-2], parts[-1]
    return days * 1440 + h * 60 + m + (1 if s else 0)


def gres_gpus(gres: str | None) -> int:
    """Count of GPUs in a node's Gres string ("gpu:a100:8(S:0-1),nvme:1" -> 8)."""
    total = 0
    for entry in (gres or "").split(","):
        entry = entry.split("(")[0].strip()
        if not entry.startswith("gpu"):
            continue
        last = entry.split(":")[-1]
        total += int(last) if last.isdigit() else 1
    return total


def expand_nodelist(spec: str) -> list[str]:
    """"gpu[01-03,07],cpu1" -> ["gpu01", "gpu02", "gpu03", "gpu07", "cpu1"]."""
    out: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", spec or ""):
        prefix, ranges = m.group(1), m.group(2)
        if not ranges:
            out.append(prefix)
            continue
        for r in ranges.split(","):
            if "-" in r:
                a, b = r.split("-")
                out += [f"{prefix}{i:0{len(a)}d}" for i in range(int(a), int(b) + 1)]
            else:
                out.append(prefix + r)
    return [n for n in out if n]


@dataclass
class NodeInfo:
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    features: set[str]
    state: str


@dataclass
class PartitionInfo:
    name: str
    max_time_min: int | None
    max_nodes: int | None
    nodes: list[str]
    state: str
    default: bool


@dataclass
class ClusterInfo:
    max_array_size: int
    partitions: dict[str, PartitionInfo]
    nodes: dict[str, NodeInfo]

    def partition_nodes(self, name: str) -> list[NodeInfo]:
        return [self.nodes[n] for n in self.partitions[name].nodes if n in self.nodes]


def cluster_info() -> ClusterInfo:
    """MaxArraySize, partitions and nodes: three scontrol calls, ~10 ms each."""
    conf = {}
    for line in run(["scontrol", "show", "config"]).splitlines():
        if " = " in line:
            k, v = line.split(" = ", 1)
            conf[k.strip()] = v.strip()
    parts = {}
    for line in run(["scontrol", "-o", "show", "partition"]).splitlines():
        if not line.strip():
            continue
        d = parse_oneliner(line)
        mn = d.get("MaxNodes", "UNLIMITED")
        parts[d["PartitionName"]] = PartitionInfo(
            name=d["PartitionName"], max_time_min=parse_minutes(d.get("MaxTime")),
            max_nodes=None if mn.upper() == "UNLIMITED" else int(mn),
            nodes=expand_nodelist(d.get("Nodes", "")), state=d.get("State", "UP"),
            default=d.get("Default") == "YES")
    nodes = {}
    for line in run(["scontrol", "-o", "show", "node"]).splitlines():
        if not line.strip():
            continue
        d = parse_oneliner(line)
        feats = d.get("AvailableFeatures", "")
        nodes[d["NodeName"]] = NodeInfo(
            name=d["NodeName"], cpus=int(d.get("CPUTot", 0) or 0), mem_mb=int(d.get("RealMemory", 0) or 0),
            gpus=gres_gpus(d.get("Gres")), state=d.get("State", ""),
            features=set() if feats in ("", "(null)") else set(feats.split(",")))
    return ClusterInfo(int(conf.get("MaxArraySize", 1001)), parts, nodes)


# --------------------------------------------------------------------------- jobs


def expand_array_string(s: str) -> list[int]:
    """"0-999%64" / "1,5,7-9" / "0-10:2" -> task ids."""
    s = (s or "").split("%")[0].strip()
    out: list[int] = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        step = 1
        if ":" in part:
            part, st = part.split(":")
            step = int(st)
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1, step))
        else:
            out.append(int(part))
    return out


def expand_hex_bitmap(s: str) -> list[int]:
    """sacct's "0x1F" bitmap of a pending array's tasks -> task ids."""
    try:
        v = int(s, 16)
    except (TypeError, ValueError):
        return []
    out, i = [], 0
    while v:
        if v & 1:
            out.append(i)
        v >>= 1
        i += 1
    return out


@dataclass
class TaskState:
    array_job_id: str          # the id the array (or plain job) was submitted as
    task_id: int | None        # None for a plain job
    job_id: str                # Slurm's raw id of this task
    state: str                 # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    reason: str = ""
    start: float | None = None
    end: float | None = None
    restarts: int = 0
    nodes: str = ""

    @property
    def ref(self) -> str:
        return self.array_job_id if self.task_id is None else f"{self.array_job_id}_{self.task_id}"


LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
        "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


def _ts(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def _first_state(v: Any) -> str:
    if isinstance(v, list):
        v = v[0] if v else ""
    return str(v or "").split()[0].upper() if v else ""


def squeue(array_job_ids: Iterable[str] | None = None) -> dict[str, TaskState]:
    """One `squeue --json` call: {ref ("123_4" or "123"): TaskState}, for the given array ids
    only (all jobs when None). A pending array record is expanded to one entry per task."""
    wanted = None if array_job_ids is None else {str(j) for j in array_job_ids}
    out: dict[str, TaskState] = {}
    if wanted is not None and not wanted:
        return out
    data = json.loads(run(["squeue", "--json"]) or "{}")
    for j in data.get("jobs", []):
        is_array = str(j.get("array_job_id") or 0) != "0"     # Slurm's 0 (or none): not an array
        arr = str(j["array_job_id"]) if is_array else str(j["job_id"])
        if wanted is not None and arr not in wanted:
            continue
        common = dict(state=_first_state(j.get("job_state")), reason=str(j.get("state_reason") or ""),
                      start=_ts(j.get("start_time")), end=_ts(j.get("end_time")),
                      restarts=int(j.get("restart_cnt") or 0), nodes=str(j.get("nodes") or ""))
        if common["state"] not in ("RUNNING", "COMPLETING") and common["state"] in LIVE:
            common["start"] = None     # a pending job's start_time is only an estimate
        tid, tstr = j.get("array_task_id"), j.get("array_task_string") or ""
        if tid is None and tstr:
            for t in expand_array_string(tstr):
                ts = TaskState(arr, t, f"{arr}_{t}", **common)
                out[ts.ref] = ts
        else:
            ts = TaskState(arr, int(tid) if is_array and tid is not None else None, str(j["job_id"]), **common)
            out[ts.ref] = ts
    return out


def sacct(array_job_ids: Iterable[str]) -> dict[str, TaskState]:
    """One `sacct --json -X -j ...` call: the accounting record of every task of the given
    jobs ({} when accounting is off or nothing is known). The newest record of a task wins
    (a requeued task has one record per run)."""
    ids = sorted({str(j) for j in array_job_ids}, key=lambda s: (len(s), s))
    out: dict[str, TaskState] = {}
    if not ids:
        return out
    try:
        text = run(["sacct", "--json", "-X", "-j", ",".join(ids)], check=False)
        data = json.loads(text or "{}")
    except (SlurmError, json.JSONDecodeError):
        return out
    for j in data.get("jobs", []):
        a = j.get("array") or {}
        arr = str(a.get("job_id") or 0)
        raw = str(j.get("job_id"))
        if arr == "0":
            arr = raw
        st = j.get("state") or {}
        t = j.get("time") or {}
        common = dict(state=_first_state(st.get("current")), reason=str(st.get("reason") or ""),
                      start=_ts(t.get("start")), end=_ts(t.get("end")), nodes=str(j.get("nodes") or ""))
        tasks: list[int | None]
        if a.get("task_id") is not None:
            tasks = [int(a["task_id"])]
        elif a.get("task"):
            tasks = expand_hex_bitmap(a["task"])
        else:
            tasks = [None]
        for tid in tasks:
            ts = TaskState(arr, tid, raw if tid is None or a.get("task_id") is not None else f"{arr}_{tid}",
                           **common)
            prev = out.get(ts.ref)
            if prev is None or (ts.start or ts.end or 0) >= (prev.start or prev.end or 0):
                out[ts.ref] = ts
    return out


def scancel(job_ids: Iterable[str], signal: str | None = None) -> None:
    ids = [str(j) for j in job_ids]
    if not ids:
        return
    argv = ["scancel"] + ([f"--signal={signal}"] if signal else []) + ids
    run(argv, check=False)
