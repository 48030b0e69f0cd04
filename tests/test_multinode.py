"""The Ray-on-Slurm bootstrap across real nodes: the virtual multi-node cluster
(localslurm/virtual-cluster.sh; fixture `virtual_cluster` in tests/slurm_cluster.py), where
each node has its own hostname, IPs, processes and node-local /tmp, and where the usual
guesses are wrong on purpose (the default route is an uplink that drops node-to-node
traffic; each node's own name resolves to 127.0.1.1).

The jobs run `python -m reasoning360.ray.probe`, which forms the job's Ray cluster exactly as
the job body does (reasoning360.ray.bootstrap), then reports what its driver sees."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import ROOT, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

FABRIC = {"vnode1": "10.231.0.11", "vnode2": "10.231.0.12", "vnode3": "10.231.0.13"}
UPLINK = {"vnode1": "10.232.0.11", "vnode2": "10.232.0.12", "vnode3": "10.232.0.13"}


def submit(vc, root: Path, nodes: int, *cmd: str, name: str = "r360t-probe") -> str:
    """One multi-node job: `srun --ntasks-per-node=1 CMD` over `nodes` nodes, as the rendered
    sbatch files run the job body; one log per rank in root."""
    root.mkdir(parents=True, exist_ok=True)
    wrap = f"srun --unbuffered --output {root}/%j_%t.log " + " ".join(cmd)
    p = subprocess.run(["sbatch", "--parsable", f"-N{nodes}", "--ntasks-per-node=1", "-c1", "--mem=1200M",
                        "-J", name, "-o", f"{root}/%j.batch", "--wrap", wrap],
                       capture_output=True, text=True, env=vc.env(), timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().split(";")[0]


def probe(vc, root: Path, nodes: int, *args: str, name: str = "r360t-probe") -> str:
    return submit(vc, root, nodes, sys.executable, "-u", "-m", "reasoning360.ray.probe", str(root), *args, name=name)


def ended(vc, jid: str, timeout: float = 180) -> tuple[str, str]:
    """(state, exit code) once the job has ended (sacct)."""
    def done():
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", jid, "-o", "State,ExitCode"], capture_output=True,
                             text=True, env=vc.env()).stdout.splitlines()
        if out and out[-1].split("|")[0] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING"):
            if not subprocess.run(["squeue", "-h", "-j", jid], capture_output=True, text=True, env=vc.env()).stdout.strip():
                state, code = out[-1].split("|")
                return state.split()[0], code        # "CANCELLED by 0" -> CANCELLED
        return None
    return wait_for(done, timeout, 0.5, f"job {jid} to end")


def job_nodes(vc, jid: str) -> list[str]:
    """The nodes Slurm gave a job, in rank order."""
    from reasoning360.launchers.slurm.query import expand_nodelist

    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", jid, "-o", "NodeList"], capture_output=True, text=True,
                         env=vc.env()).stdout.split()
    return expand_nodelist(out[-1])


def logs(root: Path, jid: str) -> dict[int, str]:
    return {int(p.stem.split("_")[1]): p.read_text() for p in root.glob(f"{jid}_*.log")}


def leftovers(vc) -> dict[str, list[str]]:
    """Ray or job processes still alive on any node."""
    out = {}
    for node in vc.nodes:
        for pid in vc.pids(node):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "vm-init.py" in cmd or cmd.startswith(("slurmd", "/usr/sbin/slurmd")):
                continue
            if any(w in cmd for w in ("raylet", "gcs_server", "ray::", "/ray/", "reasoning360.", "torch.distributed",
                                      "multinode_")):
                out.setdefault(node, []).append(cmd[:120])
    return out


def assert_clean(vc, timeout: float = 30) -> None:
    """No Ray or job process left on any node (the reaper of a job may take a moment to exit)."""
    t0 = time.time()
    while (left := leftovers(vc)) and time.time() - t0 < timeout:
        time.sleep(0.5)
    assert not left, left


def test_three_node_job_forms_one_ray_cluster_on_the_route_to_the_head(virtual_cluster, tmp_path):
    vc = virtual_cluster
    jid = probe(vc, tmp_path, 3, "--hold", "0")
    state, code = ended(vc, jid)
    log = logs(tmp_path, jid)
    assert (state, code) == ("COMPLETED", "0:0"), log
    rep = json.loads((tmp_path / jid / "probe.json").read_text())
    # one cluster, head on the first node, every node joined by its fabric address
    assert rep["hosts"] == ["vnode1", "vnode2", "vnode3"]
    assert rep["address"] == f"{FABRIC['vnode1']}:{rep['address'].rsplit(':', 1)[1]}" == rep["gcs_address"]
    nodes = {n["host"]: n for n in rep["nodes"]}
    assert {h: n["ip"] for h, n in nodes.items()} == FABRIC
    assert [h for h, n in nodes.items() if n["head"]] == ["vnode1"]
    # the driver sees every node's resources; the head keeps its CPU for the driver
    assert {h: n["resources"].get("CPU", 0) for h, n in nodes.items()} == {"vnode1": 0, "vnode2": 1, "vnode3": 1}
    assert rep["cluster_resources"]["CPU"] == 2 and all(f"node:{ip}" in rep["cluster_resources"] for ip in FABRIC.values())
    # the interface: the route to another node, then on every other node the route to the head
    assert rep["network"] == {"iface": "eth0", "ip": FABRIC["vnode1"], "how": f"route to vnode2 {FABRIC['vnode2']}"}
    for r, host in ((1, "vnode2"), (2, "vnode3")):
        view = json.loads((tmp_path / jid / f"rank-{r}.json").read_text())
        assert view["host"] == host
        assert view["network"] == {"iface": "eth0", "ip": FABRIC[host], "how": f"route to the head {FABRIC['vnode1']}"}
        assert view["env"]["GLOO_SOCKET_IFNAME"] == view["env"]["NCCL_SOCKET_IFNAME"] == "eth0"
        assert view["env"]["R360_NODE_IP"] == FABRIC[host]
        # shown in that node's job log
        assert f"rank {r} on {host}: interface eth0 address {FABRIC[host]} (route to the head" in log[r]
        assert "GLOO_SOCKET_IFNAME=eth0 NCCL_SOCKET_IFNAME=eth0" in log[r]
    assert "all 3 node(s) joined in" in log[0] and "vnode1 10.231.0.11 (0 CPU, head)" in log[0]
    assert_clean(vc)


def test_interface_from_the_profile_and_the_wrong_one_hangs(virtual_cluster, tmp_path):
    """cluster.network_interface=eth0 works; eth1 (the uplink: default route, node-to-node
    traffic dropped) is what Ray would pick by itself: joining over it hangs, and the job
    fails with the nodes named when ray_join_timeout_s runs out."""
    vc = virtual_cluster
    good = probe(vc, tmp_path / "good", 2, "--hold", "0", "--interface", "eth0")
    bad = probe(vc, tmp_path / "bad", 2, "--hold", "0", "--interface", "eth1", "--join-timeout", "8")
    assert ended(vc, good) == ("COMPLETED", "0:0"), logs(tmp_path / "good", good)
    rep = json.loads((tmp_path / "good" / good / "probe.json").read_text())
    nodes = job_nodes(vc, good)
    assert rep["network"] == {"iface": "eth0", "ip": FABRIC[nodes[0]], "how": "cluster.network_interface"}
    assert sorted(n["ip"] for n in rep["nodes"]) == sorted(FABRIC[n] for n in nodes)
    state, code = ended(vc, bad)
    log = logs(tmp_path / "bad", bad)
    assert state == "FAILED", log
    head, second = job_nodes(vc, bad)
    assert f"interface eth1 address {UPLINK[head]} (cluster.network_interface)" in log[0]
    assert f"node(s) {second} did not join the Ray cluster" in log[0], log[0][-2000:]
    assert not (tmp_path / "bad" / bad / "probe.json").exists()
    assert_clean(vc)


def test_a_node_whose_step_dies_fails_the_job_at_once_by_name(virtual_cluster, tmp_path):
    vc = virtual_cluster
    jid = probe(vc, tmp_path, 3, "--hold", "300")
    rank2 = wait_for(lambda: (tmp_path / jid / "probe.json").exists() and tmp_path.joinpath(jid, "rank-2.json").exists()
                     and json.loads((tmp_path / jid / "rank-2.json").read_text()), 180, 0.5, "the probe's cluster")
    assert rank2["host"] == "vnode3"
    t0 = time.time()
    k = vc.on("vnode3", "kill", "-KILL", str(rank2["pid"]))        # that node's srun task dies
    assert k.returncode == 0, k.stderr
    state, code = ended(vc, jid, timeout=120)
    lost = json.loads((tmp_path / jid / "lost.json").read_text())
    assert (lost["host"], lost["rank"]) == ("vnode3", 2)
    # the closed connection, not a heartbeat timeout nor Slurm's SlurmdTimeout: at once
    assert lost["why"].startswith("its job step ended (connection closed"), lost
    assert lost["at"] - t0 < 10          # (a silent node counts only after 30 s)
    log = logs(tmp_path, jid)
    assert "node vnode3 (rank 2) lost: its job step ended" in log[0]
    assert state == "FAILED" and code.split(":")[0] in ("3", "9"), (state, code)
    assert_clean(vc)


def test_two_jobs_sharing_nodes_never_collide(virtual_cluster, tmp_path):
    """Two 3-node jobs on the same three nodes at once: their own port slots, temp dirs,
    tokens and clusters; neither driver can attach to the other's cluster."""
    vc = virtual_cluster
    a_root, b_root = tmp_path / "a", tmp_path / "b"
    b = probe(vc, b_root, 3, "--hold", "600", name="r360t-probe-b")
    # job A's driver, once both clusters are up, tries to attach to B's with A's token
    attach = (f"import json,os,time,sys\n"
              f"from pathlib import Path\n"
              f"p=Path({str(b_root)!r})/{b!r}/'probe.json'\n"
              f"t=time.time()\n"
              f"while not p.exists() and time.time()-t<150: time.sleep(0.5)\n"
              f"import ray\n"
              f"ray.init(address=json.loads(p.read_text())['address'], logging_level='ERROR')\n"
              f"print('ATTACHED to', ray.get_runtime_context().gcs_address, flush=True)\n")
    a = submit(vc, a_root, 3, sys.executable, "-u", "-m", "reasoning360.ray.probe", str(a_root), "--run",
               sys.executable, "-c", _q(attach), name="r360t-probe-a")
    sa, _ = ended(vc, a, timeout=240)
    # then scancel B while it holds its cluster: every rank stops its own Ray (SIGTERM)
    subprocess.run(["scancel", b], env=vc.env(), check=True)
    sb, _ = ended(vc, b, timeout=120)
    la = logs(a_root, a)
    assert sb == "CANCELLED", logs(b_root, b)
    assert all("Ray stopped on" in text for text in logs(b_root, b).values()), logs(b_root, b)
    assert not (b_root / b / "lost.json").exists()       # a cancelled job lost no node
    assert "ATTACHED" not in la[0] and sa == "FAILED", la[0][-3000:]
    assert "InvalidAuthToken" in la[0]           # refused by B's GCS: A's token is not B's
    ra, rb = (json.loads((r / j / "probe.json").read_text()) for r, j in ((a_root, a), (b_root, b)))
    assert ra["gcs_address"] != rb["gcs_address"]
    assert {n["id"] for n in ra["nodes"]}.isdisjoint(n["id"] for n in rb["nodes"])
    for rep in (ra, rb):                       # each driver sees exactly its own three raylets
        assert sorted(n["host"] for n in rep["nodes"]) == ["vnode1", "vnode2", "vnode3"]
    for r in range(3):
        va = json.loads((a_root / a / f"rank-{r}.json").read_text())
        vb = json.loads((b_root / b / f"rank-{r}.json").read_text())
        assert va["host"] == vb["host"]
        assert va["slot"] != vb["slot"] and va["temp_dir"] != vb["temp_dir"]
        assert set(va["ports"].values()).isdisjoint(vb["ports"].values())
    assert_clean(vc)


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def test_torchrun_rendezvous_across_two_nodes_with_the_verl_sft_command(virtual_cluster, tmp_path):
    """The exact command verl's SFT path renders (srun --overlap, torchrun, c10d on the head at
    the job's rendezvous port), the trainer swapped for one gloo DDP step: both ranks join,
    all-reduce, exit cleanly. Without GLOO_SOCKET_IFNAME gloo takes the hostname's address
    (127.0.1.1 here) and the same command cannot connect."""
    vc = virtual_cluster
    script = str(ROOT / "tests" / "multinode_sft_launch.py")
    jid = submit(vc, tmp_path, 2, sys.executable, "-u", "-m", "reasoning360.ray.probe", str(tmp_path), "--run",
                 sys.executable, script, str(tmp_path / "out"))
    state, code = ended(vc, jid)
    out = tmp_path / "out"
    assert (state, code) == ("COMPLETED", "0:0"), logs(tmp_path, jid)[0][-3000:] + (out / "torchrun.log").read_text()[-3000:]
    cmd = json.loads((out / "cmd.json").read_text())
    rendered = cmd["rendered"]
    assert rendered[rendered.index("srun"):rendered.index("srun") + 6] == [
        "srun", "--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    port = json.loads((tmp_path / jid / "rank-0.json").read_text())["env"]["R360_RDZV_PORT"]
    nodes = job_nodes(vc, jid)
    assert f"--rdzv_endpoint={nodes[0]}:{port}" in rendered and "verl.trainer.sft_trainer" in rendered
    assert [c for c in cmd["ran"] if c != "multinode_ddp_step"] == [c for c in rendered if c != "verl.trainer.sft_trainer"]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["host"] for r in ranks) == nodes
    assert all(r["world"] == 2 and r["sum"] == 3.0 and r["gloo_ifname"] == "eth0" for r in ranks)
    assert ranks[0]["grad"] == ranks[1]["grad"]            # DDP averaged the two ranks' gradients
    assert ranks[0]["argv"] == ["trainer.total_epochs=1", "model.partial_pretrain=/nonexistent"]
    # the negative control: no GLOO_SOCKET_IFNAME, gloo binds the hostname's 127.0.1.1 and the
    # peers cannot reach each other
    assert cmd["rc_no_ifname"] not in (0, None), (out / "no-ifname" / "torchrun.log").read_text()[-2000:]
    assert not list((out / "no-ifname").glob("rank-*.json"))
    assert "Gloo connectFullMesh failed" in (out / "no-ifname" / "torchrun.log").read_text()
    assert "remote=[127.0.1.1]" in (out / "no-ifname" / "torchrun.log").read_text()
    assert_clean(vc)


def test_a_node_cut_off_the_network_is_named_after_the_silence(virtual_cluster, tmp_path):
    """A node whose cable is pulled sends nothing, not even a FIN: the watchdog names it once it
    has been silent for the node timeout (here 5 s; the job's default is 30 s)."""
    vc = virtual_cluster
    jid = probe(vc, tmp_path, 2, "--hold", "300", "--node-timeout", "5")
    wait_for(lambda: (tmp_path / jid / "probe.json").exists(), 180, 0.5, "the probe's cluster")
    _, second = job_nodes(vc, jid)
    vc.link(second, "down")
    try:
        t0 = time.time()
        wait_for(lambda: (tmp_path / jid / "lost.json").exists(), 60, 0.5, "the node to be named lost")
        lost = json.loads((tmp_path / jid / "lost.json").read_text())
        assert (lost["host"], lost["rank"]) == (second, 1)
        assert lost["why"].startswith("no heartbeat for") and "(node down or network cut)" in lost["why"], lost
        assert lost["at"] - t0 >= 4          # after the silence, not at once
    finally:
        vc.link(second, "up")
    state, _ = ended(vc, jid, timeout=120)
    assert state == "FAILED"
    assert_clean(vc)
