"""jobs.json: every array and job submitted for a sweep, so that a rerun or a `resubmit`
knows what is already queued (together with one squeue call) and `status`/`logs` can find
a stage's job and log. Slurm remains the truth about job state; this file only says which
job ids to ask about.
"""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from reasoning360 import atomic

JOBS = "jobs.json"


class JobsFile:
    def __init__(self, sweep_dir: str | Path):
        self.dir = Path(sweep_dir)
        self.path = self.dir / JOBS
        self.data: dict[str, Any] = {"version": 1, "submissions": []}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
        self._index: dict[str, list[tuple[str, dict]]] | None = None

    @property
    def submissions(self) -> list[dict]:
        return self.data["submissions"]

    def arrays(self) -> list[dict]:
        return [a for s in self.submissions for a in s.get("arrays", [])]

    def analysis_jobs(self) -> list[dict]:
        return [s["analysis"] for s in self.submissions if s.get("analysis")]

    def job_ids(self) -> list[str]:
        ids = [a["job_id"] for a in self.arrays()] + [j["job_id"] for j in self.analysis_jobs()]
        return list(dict.fromkeys(ids))

    def stage_refs(self) -> dict[str, list[tuple[str, dict]]]:
        """stage id -> [(job ref "jobid_task", array record), ...], oldest first."""
        if self._index is None:
            idx: dict[str, list[tuple[str, dict]]] = {}
            for a in self.arrays():
                for tid, sid in a["tasks"].items():
                    idx.setdefault(sid, []).append((f"{a['job_id']}_{tid}", a))
            self._index = idx
        return self._index

    def latest(self, stage_id: str) -> tuple[str, dict] | None:
        refs = self.stage_refs().get(stage_id)
        return refs[-1] if refs else None

    def add(self, arrays: list[dict], analysis: dict | None, note: str = "") -> None:
        self.submissions.append({"time": time.time(), "note": note, "arrays": arrays,
                                 "analysis": analysis})
        self._index = None
        atomic.write_json(self.path, self.data)


@contextmanager
def locked(sweep_dir: str | Path) -> Iterator[None]:
    """One submitter at a time per sweep (a rerun while another is submitting waits)."""
    p = Path(sweep_dir) / ".jobs.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
