"""Check a cluster's multi-node setup before a sweep: the job's Ray cluster as a stage job forms
it, and what its driver sees.

    sbatch -N3 --ntasks-per-node=1 -c2 --wrap \\
      "srun python -m reasoning360.ray.probe /shared/probe --hold 0"

Every rank forms the job's Ray cluster exactly as the job body does (reasoning360.ray.bootstrap:
interface, ports, per-job token, watchdog); rank 0 then writes `<root>/<job>/probe.json`: the
interface chosen and why, every node with its address and resources, the seconds from start to
every node joined; each rank writes `<root>/<job>/rank-<r>.json` with its own view (address,
exported environment, port slot, temp dir); rank 0 last writes `teardown.json` (the seconds its
Ray took to stop). `--hold S` keeps the cluster up S seconds (a node lost meanwhile ends the job
at once, by name: exit 3); `--run CMD...` runs a command on rank 0 with the job's environment
(RAY_ADDRESS, R360_RDZV_PORT, GLOO/NCCL_SOCKET_IFNAME) and exits with its code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

T_PROCESS = time.time()


def slurm_hosts() -> list[str]:
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return [socket.gethostname()]
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.split() or [socket.gethostname()]


def main(argv: list[str] | None = None) -> int:
    from reasoning360 import atomic
    from reasoning360.ray.bootstrap import NodeLost, RayBootstrapError, RayCluster

    ap = argparse.ArgumentParser(prog="python -m reasoning360.ray.probe")
    ap.add_argument("root", help="a directory every node sees (the shared filesystem)")
    ap.add_argument("--hold", type=float, default=0.0, help="seconds to keep the cluster up")
    ap.add_argument("--interface", default=None, help="cluster.network_interface (default: the route to the head)")
    ap.add_argument("--join-timeout", type=float, default=60.0)
    ap.add_argument("--node-timeout", type=float, default=None,
                    help="silence after which a node counts as lost (default: the job's, 30 s)")
    ap.add_argument("--run", nargs=argparse.REMAINDER, default=None, help="a command for rank 0, then exit with its code")
    a = ap.parse_args(argv)
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "local")
    key = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if os.environ.get("SLURM_ARRAY_JOB_ID") else job
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    out = Path(a.root) / key
    hosts = slurm_hosts()
    rc = RayCluster(key=key, rank=rank, hosts=hosts, shared_dir=out / f"run{restarts}",
                    num_cpus=int(os.environ.get("SLURM_CPUS_PER_TASK") or 1), interface=a.interface,
                    join_timeout_s=a.join_timeout, driver_cpus=1,
                    **({} if a.node_timeout is None else {"node_timeout_s": a.node_timeout}))
    me = socket.gethostname()

    def term(signum, frame):          # scancel: stop this node's Ray on the way out, as the job does
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # once: srun forwards scancel's TERM again
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, term)
    try:
        with rc:
            view = {"rank": rank, "host": me, "pid": os.getpid(), "network": asdict(rc.network),
                    "env": {k: os.environ.get(k) for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME",
                                                           "R360_NODE_IP", "RAY_ADDRESS", "R360_RDZV_PORT",
                                                           "MASTER_ADDR", "MASTER_PORT")},
                    "slot": rc.slot.slot, "ports": rc.slot.ports(), "temp_dir": str(rc.temp_dir)}
            atomic.write_json(out / f"rank-{rank}.json", view)
            if rank > 0:
                rc.wait_released()
                return 1 if rc.head_lost else 0
            import ray

            nodes = [{"host": n["NodeManagerHostname"], "ip": n["NodeManagerAddress"], "id": n["NodeID"],
                      "head": "node:__internal_head__" in n.get("Resources", {}), "resources": n.get("Resources", {})}
                     for n in ray.nodes() if n.get("Alive")]
            report = {"key": key, "hosts": hosts, "address": rc.address, "network": asdict(rc.network),
                      "nodes": nodes, "cluster_resources": ray.cluster_resources(),
                      "gcs_address": ray.get_runtime_context().gcs_address,
                      "joined_s": rc.joined_s, "process_to_joined_s": time.time() - T_PROCESS,
                      "joined_at": time.time()}
            atomic.write_json(out / "probe.json", report)
            print(f"[probe] {len(nodes)} node(s) joined in {rc.joined_s:.1f}s "
                  f"({report['process_to_joined_s']:.1f}s from process start)", flush=True)
            code = 0
            if a.run:
                code = subprocess.call(a.run)
            deadline = time.time() + a.hold
            while not a.run and time.time() < deadline:
                time.sleep(0.2)
            t_leave = time.time()
        # how long Ray's teardown took on the head (every Ray process of the job killed by PID)
        atomic.write_json(out / "teardown.json", {"teardown_s": time.time() - t_leave, "at": time.time()})
        return code
    except NodeLost as e:
        if e.terminated:                  # scancel reached that rank first: we are being ended too
            print(f"[probe] rank {rank} on {me}: terminated ({e})", flush=True)
            return 143
        print(f"[probe] {e}", flush=True)
        atomic.write_json(out / "lost.json", {"host": e.host, "rank": e.rank, "why": e.why, "at": time.time()})
        return 3
    except RayBootstrapError as e:
        print(f"[probe] error: {e}", flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"[probe] rank {rank} on {me}: terminated", flush=True)
        return 143


if __name__ == "__main__":
    sys.exit(main())
