"""A Ray cluster over the nodes of one Slurm job, and nothing left of it afterwards.

Rank 0 (one task per node, `srun --ntasks-per-node=1`) starts the head and publishes its
address in the job's shared directory (one per job and run, so a requeued run never reads
the head of the previous one) as soon as its GCS answers; ranks > 0 join it and stay until
rank 0 says the job is over. Readiness is polled, never slept for: rank 0 waits until every
node of the job is alive in Ray (a clear error names the nodes that did not join in time).

Network: one interface per job (reasoning360.ray.network): `cluster.network_interface`, or the
route to the head; every Ray node gets `--node-ip-address` on it, and GLOO_SOCKET_IFNAME /
NCCL_SOCKET_IFNAME are exported to the stage and to Ray's workers, so no library guesses.

Liveness: every rank > 0 holds a connection to rank 0's watchdog (reasoning360.ray.watchdog);
a node whose step dies (or goes silent) is named at once, and rank 0's main thread gets a
NodeLost exception (through SIGUSR1) instead of waiting on a dead node.

Isolation: every node takes a port *slot* (a block of ports for GCS, raylet, object manager,
agents, workers, the watchdog and a torchrun rendezvous, R360_RDZV_PORT) by flock on a
node-local file held for the life of the job, its own temp dir `/tmp/r360-ray/<job>.<pid>`,
and a per-job auth token, so two jobs on one node never collide and no driver attaches to a
cluster that is not its own.

Teardown never uses `ray stop` (it kills every Ray of the user, other jobs' included): the
processes of this cluster are found by PID — the `ray start --block` process we spawned,
its descendants, and any process whose command line names this job's temp dir — and
terminated, then killed. It runs on normal exit, on scancel (SIGTERM, which the job turns
into an exception), on preemption, and, if the job process itself is SIGKILLed, from a small
reaper process that outlives it by a moment (`python -m reasoning360.ray.bootstrap
reap`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

from reasoning360.ray import network, watchdog
from reasoning360.ray.network import interface_ip  # noqa: F401  (kept importable from here)

RAY_TMP = Path(os.environ.get("R360_RAY_TMP", "/tmp/r360-ray"))
SLOTS = 150
PORT_BASE, PORT_STRIDE = 20000, 200
FIXED_PORTS = 20          # the named ports of a slot; Ray's worker ports are the rest
DONE = "released"
ENV_MARK = "R360_RAY_KEY"        # set in the environment of every Ray process of a job


class RayBootstrapError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"[ray-bootstrap {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False


class PortSlot:
    """A block of PORT_STRIDE ports owned by this process (flock) for the life of the job."""

    def __init__(self, key: str):
        d = RAY_TMP / "slots"
        d.mkdir(parents=True, exist_ok=True)
        start = zlib.crc32(key.encode()) % SLOTS
        for i in range(SLOTS):
            slot = (start + i) % SLOTS
            fh = open(d / f"slot-{slot:03d}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            base = PORT_BASE + slot * PORT_STRIDE
            if all(_port_free(base + k) for k in range(FIXED_PORTS)):
                self.fh, self.slot, self.base = fh, slot, base
                fh.seek(0), fh.truncate(), fh.write(f"{os.getpid()} {key}\n"), fh.flush()
                return
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        raise RayBootstrapError(f"no free Ray port slot on {socket.gethostname()} ({SLOTS} in use)")

    def ports(self) -> dict[str, int]:
        b = self.base
        return {"port": b, "node-manager-port": b + 1, "object-manager-port": b + 2,
                "metrics-export-port": b + 3, "dashboard-agent-grpc-port": b + 4,
                "dashboard-agent-listen-port": b + 5, "runtime-env-agent-port": b + 6,
                "ray-client-server-port": b + 7, "dashboard-port": b + 8,
                "watchdog-port": b + 9,       # rank 0's node watchdog (reasoning360.ray.watchdog)
                "rendezvous-port": b + 11,    # exported as R360_RDZV_PORT: torchrun's c10d endpoint
                "min-worker-port": b + FIXED_PORTS, "max-worker-port": b + PORT_STRIDE - 1}

    def release(self) -> None:
        if getattr(self, "fh", None) is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def ray_executable() -> str:
    cand = Path(sys.executable).parent / "ray"
    return str(cand) if cand.exists() else (shutil.which("ray") or "ray")


# ----------------------------------------------------------------------- process discovery


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def _holds_file_under(pid: int, prefix: str) -> bool:
    """Whether `pid` has a file open under `prefix` (every Ray process keeps its log open in the
    job's session directory)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
        except OSError:
            continue
    return False


def cluster_pids(temp_dir: Path, roots: list[int] = (), exclude: set[int] = frozenset()) -> set[int]:
    """PIDs of this job's Ray: `roots` and processes that name temp_dir in their command line,
    carry R360_RAY_KEY=temp_dir in their environment (Ray workers rename themselves
    `ray::Actor`, but inherit the raylet's environment) or hold a file open under temp_dir (a
    long process title overwrites the environment too: an agent orphaned by a dead raylet is
    found by its open log), and all their descendants."""
    pids = _all_pids()
    children: dict[int, list[int]] = {}
    mark = str(temp_dir)
    env_mark = f"{ENV_MARK}={mark}\0".encode()
    found: set[int] = set()
    for pid in pids:
        pp = _ppid(pid)
        if pp is not None:
            children.setdefault(pp, []).append(pid)
        cmd = _cmdline(pid) + " "
        if (mark + "/" in cmd or mark + " " in cmd or _environ_has(pid, env_mark)
                or (cmd.startswith("ray::") and _holds_file_under(pid, mark + "/"))):
            found.add(pid)
    stack = [r for r in roots if r] + list(found)
    while stack:
        p = stack.pop()
        for c in children.get(p, []):
            if c not in found:
                found.add(c)
                stack.append(c)
        found.add(p)
    me = os.getpid()
    return {p for p in found if p != me and p not in exclude and Path(f"/proc/{p}").exists()}


def kill_cluster(temp_dir: Path, roots: list[int] = (), exclude: set[int] = frozenset(),
                 grace_s: float = 5.0) -> list[int]:
    """TERM then KILL every process of this job's Ray; returns the PIDs that were signalled."""
    pids = cluster_pids(temp_dir, roots, exclude)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + grace_s
    while time.time() < deadline:
        left = {p for p in pids if _alive(p)}
        if not left:
            break
        time.sleep(0.1)
    for _ in range(3):   # processes started while we were stopping it
        rest = cluster_pids(temp_dir, roots, exclude) | {p for p in pids if _alive(p)}
        if not rest:
            break
        for p in rest:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pids |= rest
        time.sleep(0.2)
    for p in pids:        # reap our own children (zombies)
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ----------------------------------------------------------------------- the cluster


class NodeLost(KeyboardInterrupt):
    """Raised in rank 0's main thread when another node of the job is lost. A KeyboardInterrupt,
    so that it interrupts whatever the stage is doing (a `ray.get` on an actor of that node
    included) and the runner records the attempt as interrupted, not as a bug of the stage."""

    def __init__(self, host: str, rank: int, why: str, terminated: bool = False):
        super().__init__(f"node {host} (rank {rank}) lost: {why}")
        self.host, self.rank, self.why = host, rank, why
        self.terminated = terminated     # Slurm ended that rank (scancel, time limit): the job is ending

    def __str__(self) -> str:
        return self.args[0]


class RayCluster:
    """Context manager: `with RayCluster(...) as rc: ...` (rank 0 gets rc.address).

    driver_cpus: CPUs of the head that the job's driver (rank 0's stage, outside Ray) keeps for
    itself when the job has several nodes, so that Ray places its actors on the other nodes first."""

    def __init__(self, *, key: str, rank: int, hosts: list[str], shared_dir: Path, num_cpus: int,
                 num_gpus: int = 0, interface: str | None = None, join_timeout_s: float = 180.0,
                 driver_cpus: int = 0, node_timeout_s: float = watchdog.TIMEOUT_S):
        self.key, self.rank, self.hosts = key, rank, list(hosts) or [socket.gethostname()]
        self.shared = Path(shared_dir)
        self.num_cpus, self.num_gpus = max(1, int(num_cpus)), int(num_gpus)
        if self.rank == 0 and len(self.hosts) > 1:
            self.num_cpus = max(0, self.num_cpus - int(driver_cpus))
        self.interface, self.join_timeout_s = interface, float(join_timeout_s)
        self.node_timeout_s = float(node_timeout_s)     # silence after which a node counts as lost
        # per run (pid): a requeued task restarting on this node never shares the dir of its
        # previous run, whose reaper may still be sweeping it
        self.temp_dir = RAY_TMP / f"{key.replace('/', '_')}.{os.getpid()}"
        if len(str(self.temp_dir)) > 45:    # + "/session_<date>_<pid>/sockets/plasma_store" <= 107
            raise RayBootstrapError(f"R360_RAY_TMP: Ray temp dir {self.temp_dir} is too long for Ray's "
                                    "unix sockets (107 bytes); use a short node-local path")
        self.proc: subprocess.Popen | None = None
        self.slot: PortSlot | None = None
        self.address: str | None = None
        self.network: network.Choice | None = None
        self.joined_s: float | None = None      # rank 0: seconds from start() to every node joined
        self.lost: NodeLost | None = None       # rank 0: the first node lost after the cluster was up
        self.head_lost: str | None = None       # ranks > 0: why the head went away, if it did
        self._server: watchdog.Server | None = None
        self._client: watchdog.Client | None = None
        self._up = False
        self._stopped = False
        self._main = threading.main_thread().ident

    # -- lifecycle
    def __enter__(self) -> "RayCluster":
        try:
            self.start()
        except BaseException as e:
            if self._client is not None:
                self._client.error(f"{type(e).__name__}: {e}")
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._client is not None and exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._client.terminated()     # SIGTERM (the job turns it into KeyboardInterrupt)
        self.stop()

    def start(self) -> "RayCluster":
        t0 = time.monotonic()
        self.shared.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            for f in self.shared.glob("joined-*"):
                f.unlink()
            (self.shared / DONE).unlink(missing_ok=True)
            (self.shared / "head.json").unlink(missing_ok=True)
        self.slot = PortSlot(self.key)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._start_reaper()
        ports = self.slot.ports()
        head = None
        try:
            if self.rank == 0:
                self.network = network.choose(self.interface, peers=self.hosts[1:])
            else:
                head = self._wait_head()
                self._client = watchdog.Client(head["watch"], self.rank, socket.gethostname(),
                                               connect_timeout_s=self.join_timeout_s,
                                               timeout_s=self.node_timeout_s)
                self.network = network.choose(self.interface, head_ip=head["ip"])
        except (network.NetworkError, ConnectionError) as e:
            raise RayBootstrapError(str(e)) from None
        os.environ.update(self.network.env())
        _log(f"rank {self.rank} on {socket.gethostname()}: {self.network.describe()}; exported "
             + " ".join(f"{k}={v}" for k, v in sorted(self.network.env().items())))
        argv = [ray_executable(), "start", "--block", "--disable-usage-stats",
                f"--temp-dir={self.temp_dir}", f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}",
                f"--node-ip-address={self.network.ip}"]
        if self.rank == 0:
            # no dashboard, and no autoscaler monitor (a Slurm allocation does not scale): two
            # Python processes fewer to start on the head
            argv += ["--head", "--include-dashboard=false", "--no-monitor"]
            argv += [f"--{k}={v}" for k, v in ports.items() if k not in ("watchdog-port", "rendezvous-port")]
            if len(self.hosts) > 1:
                self._server = watchdog.Server(self.network.ip, ports["watchdog-port"], self._on_lost,
                                               timeout_s=self.node_timeout_s)
                self._install_lost_handler()
        else:
            argv.append(f"--address={head['address']}")
            argv += [f"--{k}={v}" for k, v in ports.items()
                     if k not in ("port", "ray-client-server-port", "dashboard-port", "watchdog-port",
                                  "rendezvous-port")]
        self._auth()
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", ENV_MARK: str(self.temp_dir)}
        log = open(self.temp_dir / "ray-start.log", "ab")
        _log(f"rank {self.rank} on {socket.gethostname()}: ray start (slot {self.slot.slot}, temp {self.temp_dir})")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=_ignore_preemption_signal)
        if self.rank == 0:
            self.address = self._wait_gcs(ports["port"])
            os.environ["RAY_ADDRESS"] = self.address
            # torchrun's c10d rendezvous on the head: a free port of this job's slot, and the
            # head by name (torchrun hosts the store on the node whose *hostname* matches the
            # endpoint; an IP endpoint matches nothing where the hostname resolves to 127.0.1.1,
            # and every agent then waits for a store nobody started)
            os.environ["R360_RDZV_PORT"] = str(ports["rendezvous-port"])
            os.environ["MASTER_ADDR"] = socket.gethostname()
            os.environ["MASTER_PORT"] = str(ports["rendezvous-port"])
            self._wait_nodes()
            self.joined_s = time.monotonic() - t0
            _log(f"Ray cluster up at {self.address}: all {len(self.hosts)} node(s) joined in "
                 f"{self.joined_s:.1f}s: {self._describe_nodes()}")
        else:
            self._wait_raylet_up()
            (self.shared / f"joined-{socket.gethostname()}").write_text(str(os.getpid()))
        self._up = True
        return self

    # -- node loss (rank 0)
    def _install_lost_handler(self) -> None:
        """SIGUSR1 carries the watchdog's verdict to the main thread (a real signal interrupts a
        blocking call, which _thread.interrupt_main does not)."""
        def handler(signum, frame):
            if self.lost is not None and not self._stopped:
                raise self.lost
        try:
            signal.signal(signal.SIGUSR1, handler)
        except ValueError:        # not the main thread: interrupt_main is the fallback
            self._main = None

    def _on_lost(self, host: str, rank: int, why: str, terminated: bool = False) -> None:
        err = NodeLost(host, rank, why, terminated)
        _log(f"{err}")
        self.lost = err           # kept even when the cluster is already stopping: the job's verdict
        if self._stopped:
            return
        if not self._up:
            return                # start() polls for it
        if self._main is not None:
            signal.pthread_kill(self._main, signal.SIGUSR1)
        else:
            import _thread
            _thread.interrupt_main()

    def _describe_nodes(self) -> str:
        import ray

        rows = []
        def is_head(n):
            return "node:__internal_head__" in n.get("Resources", {})

        for n in sorted(ray.nodes(), key=lambda n: (not is_head(n), n.get("NodeManagerHostname", ""))):
            if n.get("Alive"):
                cpus = n.get("Resources", {}).get("CPU", 0)
                rows.append(f"{n.get('NodeManagerHostname')} {n.get('NodeManagerAddress')} ({cpus:g} CPU"
                            + (", head)" if is_head(n) else ")"))
        return ", ".join(rows)

    def _auth(self) -> None:
        """Token auth with a per-job token (rank 0 makes it, in the job's shared directory), set
        for `ray start` and for this process's driver alike. Without an explicit mode Ray 2.60
        turns token auth on whenever ~/.ray/auth_token exists, and a driver without the token
        is refused. A token per job (and run) also means no process can attach to the Ray
        cluster of another job, nor the other way round."""
        tok = self.shared / "auth_token"
        if self.rank == 0:
            import secrets

            fd = os.open(tok, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(tok)
        os.environ.pop("RAY_AUTH_TOKEN", None)

    def _start_reaper(self) -> None:
        """A watchdog that outlives a SIGKILLed job process just long enough to kill its Ray.
        It detaches (double fork) so that Slurm's process tracking does not kill it together
        with the job, and exits on its own once the job process is gone."""
        p = subprocess.Popen(
            [sys.executable, "-m", "reasoning360.ray.bootstrap", "reap", str(os.getpid()),
             self.temp_dir.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_ignore_preemption_signal)
        p.wait()

    def _wait_gcs(self, port: int) -> str:
        """Publish the head's address as soon as its GCS accepts connections (the other ranks
        start their raylets meanwhile), then wait for the head's own raylet."""
        ip = self.network.ip
        deadline = time.time() + 60
        published = False
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RayBootstrapError(f"ray start --head exited with {self.proc.returncode} on "
                                        f"{socket.gethostname()}: {self._start_log_tail()}")
            try:
                if not published:
                    with socket.create_connection((ip, port), timeout=0.5):
                        pass
                    from reasoning360 import atomic
                    atomic.write_json(self.shared / "head.json", {
                        "address": f"{ip}:{port}", "ip": ip, "host": socket.gethostname(), "key": self.key,
                        "watch": self._server.address if self._server else None})
                    published = True
                if self._registered_nodes(ip, port) >= 1:
                    return f"{ip}:{port}"
            except Exception:   # not up yet (refused, or GCS up but raylet not registered)
                pass
            time.sleep(0.1)
        raise RayBootstrapError(f"the Ray head on {socket.gethostname()} did not come up within 60 s: "
                                f"{self._start_log_tail()}")

    def _registered_nodes(self, ip: str, port: int) -> int:
        import ray

        if not ray.is_initialized():
            keep = signal.getsignal(signal.SIGTERM)
            try:
                ray.init(address=f"{ip}:{port}", logging_level="ERROR", log_to_driver=False)
            finally:     # ray.init installs a SIGTERM handler of its own (sys.exit): keep the job's
                if keep is not None:
                    signal.signal(signal.SIGTERM, keep)
        return sum(1 for n in ray.nodes() if n.get("Alive"))

    def _wait_nodes(self) -> None:
        import ray

        want = len(self.hosts)
        deadline = time.time() + self.join_timeout_s
        while True:
            if self.lost is not None:      # a node died while the cluster formed: name it now
                raise self.lost
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= want:
                return
            if time.time() > deadline:
                joined = {socket.gethostname()} | {f.name[len("joined-"):] for f in self.shared.glob("joined-*")}
                joined |= {n.get("NodeManagerHostname", "") for n in alive}
                missing = [h for h in self.hosts if h not in joined and h.split(".")[0] not in joined]
                missing = missing or [f"{want - len(alive)} of {self.hosts}"]
                raise RayBootstrapError(
                    f"node(s) {', '.join(missing)} did not join the Ray cluster of job {self.key} within "
                    f"{self.join_timeout_s:.0f}s ({len(alive)}/{want} joined; see the job log of that node)")
            time.sleep(0.1)

    def _wait_head(self) -> dict:
        deadline = time.time() + self.join_timeout_s
        f = self.shared / "head.json"
        while time.time() < deadline:
            if f.exists():
                try:
                    return json.loads(f.read_text())
                except ValueError:
                    pass
            if (self.shared / DONE).exists():
                raise RayBootstrapError("the job ended before its Ray head came up")
            time.sleep(0.1)
        raise RayBootstrapError(f"no Ray head address in {f} after {self.join_timeout_s:.0f}s")

    def _wait_raylet_up(self) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RayBootstrapError(f"ray start on {socket.gethostname()} exited with "
                                        f"{self.proc.returncode}: {self._start_log_tail()}")
            if self._client is not None and self._client.released.is_set():
                raise RayBootstrapError(f"the head went away before this node joined: {self._client.lost}")
            if list(self.temp_dir.glob("session_*/sockets/raylet*")):
                return
            time.sleep(0.1)
        raise RayBootstrapError(f"the raylet on {socket.gethostname()} did not come up within 60 s: "
                                f"{self._start_log_tail()}")

    def _start_log_tail(self) -> str:
        try:
            return " | ".join((self.temp_dir / "ray-start.log").read_text().strip().splitlines()[-5:])
        except OSError:
            return ""

    def wait_released(self, poll_s: float = 0.2) -> None:
        """Ranks > 0: stay until rank 0 releases the cluster, or the head is lost (head_lost
        says why), or this node's Ray exits."""
        while not (self.shared / DONE).exists():
            if self._client is not None and self._client.released.is_set():
                if self._client.lost and not (self.shared / DONE).exists():
                    self.head_lost = self._client.lost
                    _log(f"head lost: {self.head_lost}")
                return
            if self.proc is not None and self.proc.poll() is not None:
                _log(f"ray on {socket.gethostname()} exited ({self.proc.returncode})")
                return
            time.sleep(poll_s)

    def release(self) -> None:
        """Rank 0: tell the other ranks the job is over."""
        try:
            (self.shared / DONE).write_text(str(time.time()))
        except OSError:
            pass
        if self._server is not None:
            self._server.release()

    def stop(self) -> None:
        """Tear the cluster down by PID, fast (well inside Slurm's KillWait): disconnect the
        driver (bounded), TERM every process of this cluster but `ray start --block` (on TERM
        it drains for 30 s), KILL `ray start`, then KILL whatever is left."""
        if self._stopped:
            return
        self._stopped = True
        with _uninterrupted():
            self._stop()

    def _stop(self) -> None:
        if self.rank == 0:
            self.release()
        if self._client is not None:
            self._client.close()
        t = threading.Thread(target=_shutdown_driver, daemon=True)
        t.start()
        t.join(timeout=5)
        roots = [self.proc.pid] if self.proc is not None else []
        pids = cluster_pids(self.temp_dir, roots)
        for p in pids - set(roots):
            _signal(p, signal.SIGTERM)
        for p in roots:
            _signal(p, signal.SIGKILL)
        deadline = time.time() + 3
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        # then sweep again, whatever happened: a process forked while we were stopping the rest
        # (an agent the raylet was starting) is found by its R360_RAY_KEY
        killed = kill_cluster(self.temp_dir, roots, grace_s=0.5)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        _log(f"Ray stopped on {socket.gethostname()} ({len(pids)} process(es), {len(killed)} killed)")
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if self.slot is not None:
            self.slot.release()
        if self.rank == 0:
            (self.shared / "auth_token").unlink(missing_ok=True)


@contextmanager
def _uninterrupted():
    """Teardown runs to its end. scancel signals every rank's step separately (and srun forwards
    the TERM again), so a rank the head has already released is often tearing down when its own
    TERM arrives: raised as KeyboardInterrupt there, it would abort the teardown half-way (this
    node's Ray left to the reaper, the log without its last line). TERM, INT (the USR2 grace
    period's interrupt) and USR1 (the watchdog's verdict) are ignored meanwhile: the job is
    ending either way, and Slurm's KillWait is the bound."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        yield
    finally:
        for s, handler in old.items():
            if handler is not None:
                signal.signal(s, handler)


def _ignore_preemption_signal() -> None:
    """In `ray start` (and so in every Ray process it spawns: an ignored signal stays ignored
    across exec) and in the reaper: Slurm delivers the preemption signal (USR2, `--signal`) to
    every process of the job's steps, and its default action would kill the raylets and Ray
    workers of every node under the job that is about to checkpoint. Only the job body acts
    on it. USR1 too: Slurm may be told to send it (`--signal=USR1@N`), and rank 0's job
    process uses it for the watchdog's verdict (a Ray process must never act on either)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _shutdown_driver() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:
        pass


def reap(parent: int, key: str) -> None:
    """Wait for `parent` to die, then kill whatever Ray of job `key` is left on this node."""
    if os.fork():            # detach: the launcher's child exits at once, the reaper is init's
        os._exit(0)
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    while _alive(parent):
        time.sleep(0.5)
    temp = RAY_TMP / key
    kill_cluster(temp, [], grace_s=2.0)
    time.sleep(3)                 # and once more, for what was still being born (a loaded node)
    kill_cluster(temp, [], grace_s=2.0)
    shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "reap":
        reap(int(sys.argv[2]), sys.argv[3])
    else:
        print("usage: python -m reasoning360.ray.bootstrap reap PARENT_PID JOB_KEY", file=sys.stderr)
        sys.exit(2)
