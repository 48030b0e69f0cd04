"""Metrics of a stage: metrics.jsonl always, a metrics.parquet when the stage finishes,
and wandb (offline unless a key is set) when asked.

A resumed stage truncates rows past its checkpoint before appending, so a killed and
rerun stage never logs a step twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from . import atomic

METRICS = "metrics.jsonl"


def read_metrics(stage_dir: str | os.PathLike) -> list[dict]:
    """Rows of a stage's metrics.jsonl; a torn last line (killed mid-write) is skipped."""
    path = Path(stage_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class Tracker:
    def __init__(self, stage_dir: str | os.PathLike, *, resume_step: int = 0,
                 wandb_cfg: dict | None = None, run_name: str = "", group: str = "",
                 config: dict | None = None):
        self.dir = Path(stage_dir)
        self.path = self.dir / METRICS
        kept = [r for r in read_metrics(self.dir) if r.get("step", 0) <= resume_step]
        atomic.write_jsonl(self.path, kept)      # drops rows past the checkpoint
        self._fh = open(self.path, "a")
        self._wandb = None
        if wandb_cfg is not None and wandb_cfg["wandb"]:     # configs/config.yaml `tracking:`
            self._wandb = _start_wandb(self.dir, wandb_cfg, run_name, group, config or {})

    def log(self, step: int, **metrics: Any) -> None:
        row = {"step": int(step), "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=int(step))

    def close(self, finished: bool = True) -> None:
        self._fh.close()
        if finished:
            write_metrics_parquet(self.dir)
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def last_row(stage_dir: str | os.PathLike) -> dict | None:
    """The last whole line of metrics.jsonl, from its tail only (cheap to poll: status reads
    thousands); None when there is none yet."""
    try:
        with open(os.path.join(stage_dir, METRICS), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            tail = fh.read().splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            return row
    return None


def last_step(stage_dir: str | os.PathLike) -> int | None:
    row = last_row(stage_dir)
    return None if row is None else int(row["step"])


def write_metrics_parquet(stage_dir: str | os.PathLike) -> None:
    """Columnar copy of metrics.jsonl, so analysis loads 1,000s of stages quickly."""
    import pandas as pd

    rows = read_metrics(stage_dir)
    if not rows:
        return
    write_metrics_frame(pd.DataFrame(rows), Path(stage_dir) / "metrics.parquet")


def write_metrics_frame(df, path: str | os.PathLike) -> None:
    """A metrics table as parquet, laid out for fast whole-file reads: uncompressed, no
    dictionary pages, no statistics, no pandas metadata (a stage's metrics are small and
    analysis reads thousands of them at once; see bench/bench_analysis.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="none", use_dictionary=False, write_statistics=False)


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v


def _start_wandb(stage_dir: Path, cfg: dict, name: str, group: str, config: dict):
    import wandb

    mode = cfg["wandb_mode"]
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        mode = "offline"
    # wandb >= 0.19 deprecates reinit=True for "finish_previous" (same meaning)
    version = tuple(int(x) for x in wandb.__version__.split(".")[:2] if x.isdigit())
    reinit = "finish_previous" if version >= (0, 19) else True
    return wandb.init(project=cfg["wandb_project"], name=name, group=group,
                      config=config, dir=str(stage_dir), mode=mode, reinit=reinit,
                      id=stage_dir.name, resume="allow")
