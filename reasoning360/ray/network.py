"""Which network a job's nodes talk over, and the environment that tells gloo, NCCL and Ray.

The usual guesses are wrong on many clusters: the address of the default route (what Ray picks
by itself) may be an uplink that does not carry node-to-node traffic, and the address the
hostname resolves to (what gloo and NCCL pick by themselves) is 127.0.1.1 on a stock Debian
/etc/hosts. Either way collectives hang. So one interface is chosen per job and exported:

  * `cluster.network_interface` (e.g. ib0) when the site profile names one;
  * otherwise the interface of the route to the head, as `ip route get <head>` answers; the
    head itself takes the route to another node of the job at the address Slurm reaches it by
    (its NodeAddr), so every node lands on the network Slurm itself uses between nodes.

`choose` returns the interface and this node's address on it; `env` is what the job exports
(GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME, and the node address that Ray's `--node-ip-address`
gets).
"""

from __future__ import annotations

import fcntl
import ipaddress
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass


class NetworkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Choice:
    iface: str | None      # None: a one-node job on a machine where no route was asked for
    ip: str
    how: str               # why this interface: shown in the job log

    def env(self) -> dict[str, str]:
        out = {"R360_NODE_IP": self.ip}
        if self.iface:
            out.update(GLOO_SOCKET_IFNAME=self.iface, NCCL_SOCKET_IFNAME=self.iface, R360_NET_IFACE=self.iface)
        return out

    def describe(self) -> str:
        return f"interface {self.iface or '-'} address {self.ip} ({self.how})"


def interface_ip(iface: str) -> str:
    """IPv4 address of a network interface (e.g. ib0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", iface[:15].encode()))  # SIOCGIFADDR
    except OSError as e:
        raise NetworkError(f"cluster.network_interface: {iface!r} has no IPv4 address on "
                           f"{socket.gethostname()} ({e})") from None
    finally:
        s.close()
    return socket.inet_ntoa(packed[20:24])


def route(dest: str) -> tuple[str, str]:
    """(interface, source address) of the route to `dest`, as `ip -o route get` answers."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        out = subprocess.run([ip, "-o", "route", "get", dest], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkError(f"`ip route get {dest}` failed on {socket.gethostname()}: {e}") from None
    words = out.stdout.split()
    if out.returncode != 0 or "dev" not in words or "src" not in words:
        raise NetworkError(f"no route to {dest} on {socket.gethostname()}: "
                           f"{(out.stderr or out.stdout).strip() or out.returncode}")
    return words[words.index("dev") + 1], words[words.index("src") + 1]


def slurm_node_addr(host: str) -> str | None:
    """The address Slurm reaches `host` by (NodeAddr), else what the name resolves to."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "-o", "show", "node", host], capture_output=True, text=True,
                                 timeout=20).stdout
            for word in out.split():
                if word.startswith("NodeAddr="):
                    addr = word.split("=", 1)[1]
                    if _is_ip(addr):
                        return addr
                    host = addr
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        addr = socket.gethostbyname(host)
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def fallback_ip() -> str:
    """This machine's address when nothing better is known (a one-node job): the hostname's
    address unless it is loopback, else the default route's source."""
    try:
        ip = socket.gethostbyname(socket.gethostname())
        if not ip.startswith("127."):
            return ip
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def choose(interface: str | None, *, head_ip: str | None = None, peers: list[str] = ()) -> Choice:
    """The interface and address of this node for the job.

    interface: cluster.network_interface (wins when set). head_ip: the head's address (ranks > 0).
    peers: the other hosts of the job (the head: the first one Slurm can name is routed to)."""
    if interface:
        return Choice(interface, interface_ip(interface), "cluster.network_interface")
    if head_ip:
        dev, src = route(head_ip)
        return Choice(dev, src, f"route to the head {head_ip}")
    for host in peers:
        addr = slurm_node_addr(host)
        if addr is None:
            continue
        dev, src = route(addr)
        if dev != "lo":
            return Choice(dev, src, f"route to {host} {addr}")
    return Choice(None, fallback_ip(), "one node" if not peers else f"no route to {', '.join(peers)}")
