"""The artifact store: one directory per stage, named by its content address, and `StageDir`,
the only code that reads or writes a stage directory's bookkeeping.

A stage directory holds `spec.json` (what the stage is: the hashed spec, and apart the runtime
knobs that do not change its output), its outputs (written by the stage's own code:
checkpoints/, model/, metrics.jsonl, parquet files ...), `attempts.jsonl` (one line when an
attempt starts, one when it ends), `FAILED` (the traceback of the last failed attempt),
`summary.json`, and `DONE`, written last by atomic rename. DONE alone makes a stage finished;
a directory without it is partial work that the next run resumes from its last checkpoint.

A stage's state is derived from these files, in one place (`StageDir.state`), so `r360 status`,
the results table and the analysis loader can never disagree:

    done         DONE exists
    running      a process on this machine holds the stage lock, or the last attempt started
                 on another host and never ended (a Slurm job there; `r360 status` asks Slurm)
    failed       the last attempt raised (FAILED holds the traceback)
    interrupted  the last attempt stopped without finishing or failing: preempted (checkpointed
                 on request), cancelled (Ctrl-C twice, SIGTERM), or killed (SIGKILL, OOM, node
                 lost: started, never ended); resumable from its last checkpoint
    not started  no attempt yet
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .. import atomic

SPEC = "spec.json"
LEGACY_SPEC = "spec.yaml"          # stores written before spec.json; read only
SUMMARY = "summary.json"
DONE = "DONE"
FAILED = "FAILED"
ATTEMPTS = "attempts.jsonl"
LOCK = ".lock"
JOB = ".slurm-job"                 # "<jobid>_<task> <sweep dir>": the job last submitted for it

STATES = ("done", "running", "failed", "interrupted", "not started")


@dataclass(frozen=True)
class StageState:
    state: str                     # one of STATES
    detail: str = ""               # why: preempted / cancelled / killed / the error's last line / where

    @property
    def label(self) -> str:
        return f"{self.state} ({self.detail})" if self.detail else self.state


POINT_ORDER = ("failed", "running", "interrupted", "not started")


def point_state(states: dict[str, StageState]) -> tuple[StageState, str | None]:
    """A grid point's state from its stages' (role -> StageState, in pipeline order): done when
    every stage is; else the most telling unfinished stage — the first failed one, else running,
    else interrupted, else not started — and its role. The results table, `r360 status` and the
    analysis loader all say a point's state through this."""
    for wanted in POINT_ORDER:
        for role, st in states.items():
            if st.state == wanted:
                return st, role
    return StageState("done"), None


class StageBusy(RuntimeError):
    """Another process holds the stage's lock."""


class StageDir:
    """One stage directory. Reads use plain os calls: `r360 status` touches thousands per refresh."""

    __slots__ = ("path", "id", "_p")

    def __init__(self, path: str | os.PathLike):
        self._p = os.fspath(path)
        self.path = Path(self._p)
        self.id = os.path.basename(self._p)

    def __repr__(self) -> str:
        return f"StageDir({self._p!r})"

    def _f(self, name: str) -> str:
        return os.path.join(self._p, name)

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        return os.path.isdir(self._p)

    def is_done(self) -> bool:
        return os.path.exists(self._f(DONE))

    def record(self) -> dict[str, Any]:
        """{"spec": ..., "runtime": ...} as recorded by the sweep that planned it."""
        try:
            with open(self._f(SPEC)) as fh:
                return json.load(fh)
        except FileNotFoundError:
            legacy = self._f(LEGACY_SPEC)
            if not os.path.exists(legacy):
                raise FileNotFoundError(f"{self._p}: no {SPEC} (the stage was never recorded)") from None
            import yaml

            with open(legacy) as fh:
                return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

    def spec(self) -> dict[str, Any]:
        return self.record()["spec"]

    def runtime(self) -> dict[str, Any]:
        return self.record().get("runtime") or {}

    def summary(self) -> dict[str, Any]:
        """The summary of a finished stage ({} before it is done)."""
        try:
            with open(self._f(SUMMARY)) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def failure(self) -> str | None:
        """The traceback of the last failed attempt, unless the stage has since finished."""
        try:
            with open(self._f(FAILED), errors="replace") as fh:
                text = fh.read()
        except OSError:
            return None
        return None if self.is_done() else text

    def attempts(self) -> list[dict[str, Any]]:
        """Every attempt, merged from its start and end lines, oldest first."""
        rows: dict[int, dict[str, Any]] = {}
        try:
            with open(self._f(ATTEMPTS)) as fh:
                for line in fh:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue          # a torn last line (killed mid-write)
                    rows.setdefault(int(r.get("attempt", len(rows))), {}).update(r)
        except OSError:
            return []
        return [rows[k] for k in sorted(rows)]

    def last_attempt(self) -> dict[str, Any] | None:
        a = self.attempts()
        return a[-1] if a else None

    def is_locked(self) -> bool:
        """A process on this machine holds the stage lock (the lock is observed in /proc/locks,
        never taken, so a launcher that tries to take it at that moment is never refused)."""
        try:
            st = os.stat(self._f(LOCK))
        except OSError:
            return False
        return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held_flocks()

    def state(self) -> StageState:
        """The stage's state from its directory alone (see the module docstring)."""
        if self.is_done():
            return StageState("done")
        if self.is_locked():
            return StageState("running")
        last = self.last_attempt()
        status = None if last is None else last.get("status")
        if status == "failed" or (last is None and self.failure() is not None):
            text = (self.failure() or "").strip().splitlines()
            return StageState("failed", text[-1][:200] if text else "")
        if last is None:
            return StageState("not started")
        if status in ("preempted", "cancelled"):
            return StageState("interrupted", status)
        if status == "running":           # started and never ended
            if last.get("host") == socket.gethostname() and not _alive(last.get("pid")):
                return StageState("interrupted", "killed")
            if last.get("host") != socket.gethostname():
                return StageState("running", f"on {last.get('host')}")
            return StageState("running")
        return StageState("interrupted", str(status))

    def job_ref(self) -> str | None:
        """The Slurm job (`<jobid>_<task>`) last submitted for this stage, by any sweep."""
        try:
            with open(self._f(JOB)) as fh:
                return fh.read().split()[0]
        except (OSError, IndexError):
            return None

    # ------------------------------------------------------------------ writing
    def write_record(self, spec: dict[str, Any], runtime: dict[str, Any]) -> None:
        """spec.json: the hashed spec and, apart, the runtime knobs that do not change the
        output (device, threads, workers, tracking). Never rewritten once the stage is DONE."""
        if self.is_done():
            return
        text = json.dumps({"spec": spec, "runtime": runtime}, indent=1, sort_keys=True, default=str) + "\n"
        try:                # the same sweep again: reading is much cheaper than replacing
            with open(self._f(SPEC)) as fh:
                if fh.read() == text:
                    return
        except OSError:
            pass
        atomic.write_text(self._f(SPEC), text)

    def note_job(self, ref: str, sweep_dir: str | os.PathLike) -> None:
        atomic.write_text(self._f(JOB), f"{ref} {sweep_dir}\n")

    @contextlib.contextmanager
    def lock(self) -> Iterator["StageDir"]:
        """An exclusive flock, held while the stage runs, so two launchers never run one stage."""
        os.makedirs(self._p, exist_ok=True)
        fh = open(self._f(LOCK), "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise StageBusy(f"stage {self.id} is being run by another process") from None
        try:
            yield self
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def begin_attempt(self, threads: int | None = None) -> int:
        """Append the start of an attempt (so a SIGKILLed one is seen as killed), with the torch
        threads it was given (they decide float reduction order); its number."""
        n = len(self.attempts())
        self._append({"attempt": n, "start": time.time(), "status": "running", "pid": os.getpid(),
                      "host": socket.gethostname(), "job": _job_ref(), "threads": threads})
        return n

    def end_attempt(self, n: int, status: str, start: float | None = None) -> list[dict[str, Any]]:
        """Append the end of attempt `n` (done | failed | preempted | cancelled); all attempts."""
        start = start if start is not None else next((a["start"] for a in self.attempts() if a.get("attempt") == n), time.time())
        self._append({"attempt": n, "status": status, "seconds": round(time.time() - start, 3)})
        return self.attempts()

    def mark_failed(self, error: str) -> None:
        atomic.write_text(self._f(FAILED), error)

    def give_up(self, why: str) -> None:
        """The launcher will not resume this stage (its requeue budget is spent, a node of its
        job was lost): FAILED says why in one line, and the last attempt, which the runner ended
        as preempted or cancelled, now reads failed (a later end line of an attempt wins)."""
        self.mark_failed(why.strip() + "\n")
        last = self.last_attempt()
        if last is not None and last.get("status") != "failed":
            self._append({"attempt": last["attempt"], "status": "failed"})

    def mark_done(self, summary: dict[str, Any]) -> None:
        atomic.write_json(self._f(SUMMARY), summary)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._f(FAILED))
        atomic.write_text(self._f(DONE), f"{time.time()}\n")

    def _append(self, row: dict[str, Any]) -> None:
        """One line, one write() with O_APPEND: atomic for lines this short."""
        os.makedirs(self._p, exist_ok=True)
        line = (json.dumps(row, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(self._f(ATTEMPTS), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class Store:
    """The content-addressed store: `root/<stage id>/`, shared by every sweep."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def stage(self, stage_id: str) -> StageDir:
        return StageDir(os.path.join(self.root, stage_id))

    def record_all(self, records: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Write spec.json of every stage that is not DONE (one planned sweep)."""
        for sid, (spec, runtime) in records.items():
            self.stage(sid).write_record(spec, runtime)


# ----------------------------------------------------------------------------- helpers

_LOCKS: tuple[float, frozenset[tuple[int, int, int]]] | None = None


def held_flocks() -> frozenset[tuple[int, int, int]]:
    """(major, minor, inode) of every file with a flock held on this machine (/proc/locks, read
    at most every 0.25 s: status reads thousands of stages per refresh)."""
    global _LOCKS
    now = time.time()
    if _LOCKS is not None and now - _LOCKS[0] < 0.25:
        return _LOCKS[1]
    held = set()
    try:
        with open("/proc/locks") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK":
                    try:
                        maj, mino, ino = parts[5].split(":")
                        held.add((int(maj, 16), int(mino, 16), int(ino)))
                    except ValueError:
                        continue
    except OSError:
        pass
    _LOCKS = (now, frozenset(held))
    return _LOCKS[1]


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    try:         # a zombie is dead
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _job_ref() -> str | None:
    jid = os.environ.get("SLURM_ARRAY_JOB_ID")
    if jid:
        return f"{jid}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")
