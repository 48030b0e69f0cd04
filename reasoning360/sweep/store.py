"""The artifact store: one directory per stage, named by its content address.

A stage directory holds `spec.yaml` (what it is), its outputs, `metrics.jsonl`,
`checkpoints/`, `summary.json`, and `DONE`, written last by atomic rename. DONE is
the only thing that makes a stage finished: a directory without it is partial work that
the next run resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import atomic

# libyaml's C dumper/loader: recording 4,000 stage specs takes ~1 s instead of ~10.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DONE = "DONE"
SPEC = "spec.yaml"
SUMMARY = "summary.json"
FAILED = "FAILED"


@dataclass(frozen=True)
class StageDir:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def is_done(self) -> bool:
        return (self.path / DONE).exists()

    def spec(self) -> dict[str, Any]:
        return yaml.load((self.path / SPEC).read_text(), Loader=_Loader)

    def summary(self) -> dict[str, Any]:
        p = self.path / SUMMARY
        return json.loads(p.read_text()) if p.exists() else {}

    def write_spec(self, spec: dict[str, Any], runtime: dict[str, Any]) -> None:
        """spec.yaml holds the hashed spec and, apart, the runtime knobs that do not change
        the output (device, workers, tracking)."""
        text = yaml.dump({"spec": spec, "runtime": runtime}, Dumper=_Dumper, sort_keys=True)
        atomic.write_text(self.path / SPEC, text)

    def mark_done(self, summary: dict[str, Any]) -> None:
        atomic.write_json(self.path / SUMMARY, summary)
        (self.path / FAILED).unlink(missing_ok=True)
        atomic.write_text(self.path / DONE, f"{time.time()}\n")

    def mark_failed(self, error: str) -> None:
        atomic.write_text(self.path / FAILED, error)

    def failure(self) -> str | None:
        p = self.path / FAILED
        return p.read_text() if p.exists() and not self.is_done() else None


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def stage(self, stage_id: str) -> StageDir:
        return StageDir(self.root / stage_id)

    def load(self, stage_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        doc = yaml.load((self.root / stage_id / SPEC).read_text(), Loader=_Loader)
        return doc["spec"], doc.get("runtime", {})
