"""Liveness of the nodes of one job, so that a dead node fails the job at once, by name.

Without it, a node whose `srun` step dies leaves the others waiting: Ray notices a dead raylet
only after its health checks time out, and Slurm only after SlurmdTimeout (300 s by default),
when it requeues the job on its own terms. Here rank 0 listens on a port of its slot; every
other rank connects as soon as it knows the head, says who it is, and both sides send a byte
every HEARTBEAT_S. A closed connection (the process died: the kernel closes its sockets) is
noticed at once; silence for TIMEOUT_S (the node froze, or its link went down) soon after.
Rank 0 ends the protocol with a release message, so a rank that sees its head go silent or
close without one knows the head is lost.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Callable

HEARTBEAT_S = 1.0
TIMEOUT_S = 30.0         # silence after which a peer counts as lost (node down, link cut); a closed
                         # connection counts at once
RELEASE = b"\x01"
BEAT = b"\x00"          # bytes that never occur in the text lines


class _Peer:
    __slots__ = ("sock", "rank", "host", "seen", "buf", "error", "terminated")

    def __init__(self, sock: socket.socket):
        self.sock, self.rank, self.host = sock, None, None
        self.seen, self.buf, self.error, self.terminated = time.time(), b"", None, False


class Server:
    """Rank 0: accepts the other ranks, watches them; on_lost(host, rank, why, terminated) once,
    from a thread (terminated: the rank said Slurm terminated it, as scancel does every step)."""

    def __init__(self, ip: str, port: int, on_lost: Callable[[str, int, str, bool], None],
                 timeout_s: float = TIMEOUT_S):
        self.timeout_s = float(timeout_s)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(64)
        self.address = f"{ip}:{port}"
        self.on_lost = on_lost
        self.peers: dict[int, _Peer] = {}          # by rank, once it said hello
        self._pending: list[_Peer] = []
        self.lost: tuple[str, int, str] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="r360-node-watchdog", daemon=True)
        self._thread.start()

    def hosts(self) -> dict[int, str]:
        with self._lock:
            return {r: p.host for r, p in self.peers.items()}

    def _run(self) -> None:
        last_beat = 0.0
        while not self._stop.is_set():
            socks = [self.sock] + [p.sock for p in self._pending] + [p.sock for p in self.peers.values()]
            try:
                ready, _, _ = select.select(socks, [], [], 0.2)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                continue
            now = time.time()
            for s in ready:
                if s is self.sock:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._pending.append(_Peer(c))
                    continue
                peer = next((p for p in self._pending + list(self.peers.values()) if p.sock is s), None)
                if peer is None:
                    continue
                try:
                    data = s.recv(4096)
                except OSError as e:
                    data, peer.error = b"", str(e)
                if not data:
                    self._drop(peer, "its job step ended (connection closed" +
                               (f": {peer.error})" if peer.error else ")"))
                    continue
                peer.seen = now
                peer.buf += data
                self._parse(peer)
            if now - last_beat >= HEARTBEAT_S:
                last_beat = now
                for p in list(self.peers.values()):
                    try:
                        p.sock.send(BEAT)
                    except OSError:
                        pass
            for p in list(self.peers.values()):
                if now - p.seen > self.timeout_s:
                    self._drop(p, f"no heartbeat for {now - p.seen:.0f}s (node down or network cut)")

    def _parse(self, peer: _Peer) -> None:
        peer.buf = peer.buf.replace(BEAT, b"")
        while b"\n" in peer.buf:
            line, peer.buf = peer.buf.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text.startswith("H "):            # hello: "H <rank> <host>"
                _, rank, host = text.split(" ", 2)
                peer.rank, peer.host = int(rank), host
                with self._lock:
                    if peer in self._pending:
                        self._pending.remove(peer)
                    self.peers[peer.rank] = peer
            elif text.startswith("E "):          # the rank is about to exit with this error
                peer.error = text[2:]
            elif text == "T":                    # the rank was terminated (SIGTERM: scancel, time limit)
                peer.error, peer.terminated = "terminated by Slurm (SIGTERM)", True

    def _drop(self, peer: _Peer, why: str) -> None:
        with self._lock:
            if peer in self._pending:
                self._pending.remove(peer)
            if peer.rank is not None:
                self.peers.pop(peer.rank, None)
        try:
            peer.sock.close()
        except OSError:
            pass
        if peer.rank is None or self._stop.is_set():
            return
        if peer.error and not why.startswith("its job step ended (connection closed:"):
            why = f"{why}: {peer.error}"
        if self.lost is None:
            self.lost = (peer.host, peer.rank, why)
            self.on_lost(peer.host, peer.rank, why, peer.terminated)

    def release(self) -> None:
        """Tell every rank the job is over, then stop watching."""
        self._stop.set()
        for p in list(self.peers.values()) + self._pending:
            try:
                p.sock.send(RELEASE)
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for p in list(self.peers.values()) + self._pending:
            try:
                p.sock.close()
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """Ranks > 0: connects to the head, beats; `.released` / `.lost` say how the head ended."""

    def __init__(self, address: str, rank: int, host: str, connect_timeout_s: float = 30.0,
                 timeout_s: float = TIMEOUT_S):
        self.timeout_s = float(timeout_s)
        ip, port = address.rsplit(":", 1)
        deadline = time.time() + connect_timeout_s
        while True:
            try:
                self.sock = socket.create_connection((ip, int(port)), timeout=2)
                break
            except OSError as e:
                if time.time() > deadline:
                    raise ConnectionError(f"the head's watchdog at {address} did not answer: {e}") from None
                time.sleep(0.1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        self.sock.sendall(f"H {rank} {host}\n".encode())
        self.released = threading.Event()
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="r360-head-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = last_beat = time.time()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.2)
            except (OSError, ValueError):
                return
            now = time.time()
            if ready:
                try:
                    data = self.sock.recv(4096)
                except OSError as e:
                    data = b""
                    self.lost = f"connection to the head lost ({e})"
                if RELEASE in data:
                    self.released.set()
                    return
                if not data:
                    self.lost = self.lost or "the head closed the connection (its job step ended)"
                    self.released.set()
                    return
                seen = now
            if now - last_beat >= HEARTBEAT_S:
                last_beat = now
                try:
                    self.sock.send(BEAT)
                except OSError:
                    pass
            if now - seen > self.timeout_s:
                self.lost = f"no heartbeat from the head for {now - seen:.0f}s (node down or network cut)"
                self.released.set()
                return

    def error(self, message: str) -> None:
        """Tell the head why this rank is about to exit."""
        self._send(f"E {message}\n")

    def terminated(self) -> None:
        """Tell the head that Slurm terminated this rank (scancel or the time limit reach every
        step): the job is being ended, no node was lost."""
        self._send("T\n")

    def _send(self, text: str) -> None:
        try:
            self.sock.sendall(text.encode())
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
