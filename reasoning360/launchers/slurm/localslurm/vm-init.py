"""PID 1 of one virtual machine of the virtual cluster (virtual-cluster.sh starts it).

Started as `unshare --uts --pid --mount --fork --mount-proc` inside the machine's network
namespace, it makes the machine look like a node: its own hostname, its own /sys (so the
network devices seen there are the node's), Debian's /etc/hosts (the node's own name on
127.0.1.1, the others by their fabric address: the classic setup where gloo and NCCL fall
back to loopback unless told the interface), and a node-local /tmp/r360-ray (Ray's per-job
temp dirs and port-slot locks are node-local on a real cluster). Everything else is the
machine's shared filesystem, as compute nodes share NFS.

Then it reaps orphans (daemons double-fork; Ray's reaper detaches) until it is killed;
when it dies the kernel kills every process of the machine at once, as a power cut would.

No DNS server is reachable from the cluster's networks, so /etc/resolv.conf points at the node
itself, where nothing answers: a name that is not in /etc/hosts fails at once instead of after
the resolver's timeouts (torch's c10d, for one, looks up every peer's name).

usage: vm-init.py NAME HOSTS_FILE NODE_TMP READY_FILE
"""

import os
import signal
import socket
import subprocess
import sys
import time


def main() -> None:
    name, hosts, node_tmp, ready = sys.argv[1:5]
    socket.sethostname(name)
    os.makedirs(node_tmp, exist_ok=True)
    # a sysfs of this network namespace on /sys, with the machine's cgroup tree kept under it
    # (slurmd needs /sys/fs/cgroup)
    cg = os.path.join(node_tmp, ".cgroup")
    os.makedirs(cg, exist_ok=True)
    subprocess.run(["mount", "--rbind", "/sys/fs/cgroup", cg], check=True)
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    subprocess.run(["mount", "--move", cg, "/sys/fs/cgroup"], check=True)
    subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
    resolv = os.path.join(node_tmp, ".resolv.conf")
    with open(resolv, "w") as fh:
        fh.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
    os.makedirs("/tmp/r360-ray", exist_ok=True)
    subprocess.run(["mount", "--bind", node_tmp, "/tmp/r360-ray"], check=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))   # init exits -> the kernel kills the machine
    with open(ready, "w") as fh:
        fh.write(f"{time.time()}\n")
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.5)
        except InterruptedError:
            pass


if __name__ == "__main__":
    main()
