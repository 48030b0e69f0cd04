"""verl's per-step metrics -> the stage's metrics.jsonl, under the local engine's names.

verl's trainers log through `verl.utils.tracking.Tracking`; with `trainer.logger=[console,file]`
its FileLogger appends `{"step": N, "data": {...}}` lines to $VERL_FILE_LOGGER_PATH. The
bridge tails that file (one file per attempt: verl opens it with "wb") and, for RL, the
rollout dumps verl writes to `trainer.rollout_data_dir` (`<step>.jsonl`, one line per sampled
response with its score), and logs one row per step through our Tracker:

- keys whose meaning is the same as the local engine's get the local name (`MAP_SFT`,
  `MAP_RL`): loss, lr, grad_norm, reward_mean, pg_loss, pg_clipfrac, ppo_kl, entropy, kl, ...
- reward_std, accuracy, format_rate, backtracks_mean come from the rollout dump (the local
  engine computes them from the same per-response scores: 0 / 0.1 / 1.0);
- every other verl metric is kept as `verl/<its name>`.

Pure python: no verl import (tests feed it recorded verl-style dicts).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

# verl SFT trainer (verl/trainer/sft_trainer.py) -> local engine (engines/local/sft.py)
MAP_SFT: dict[str, str] = {
    "train/loss": "loss",
    "train/lr": "lr",
    "train/grad_norm": "grad_norm",
    "val/loss": "val/loss",
}

# verl main_ppo (trainer/ppo/v1, metric_utils, workers/utils/losses) -> local engine (engines/local/grpo.py)
MAP_RL: dict[str, str] = {
    "critic/score/mean": "reward_mean",          # sequence score before any KL-in-reward (off here)
    "response_length/mean": "response_length_mean",
    "response_length/clip_ratio": "truncated_rate",
    "actor/pg_loss": "pg_loss",
    "actor/pg_clipfrac": "pg_clipfrac",
    "actor/pg_clipfrac_lower": "pg_clipfrac_lower",
    "actor/ppo_kl": "ppo_kl",
    "actor/entropy": "entropy",
    "actor/kl_loss": "kl",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "lr",
    "timing_s/step": "step_s",
    "timing_s/gen": "rollout_s",
    "timing_s/update_actor": "train_s",
}

# Validation (verl names val metrics "val-core/<data_source>/<key>/mean@N" and "val-aux/...").
VAL_KEYS = {"acc": "val/accuracy", "format_ok": "val/format_rate", "score": "val/mean_score",
            "reward": "val/mean_score"}


def map_metrics(data: dict[str, Any], kind: str) -> dict[str, Any]:
    """One verl metrics dict -> our row (numbers only; non-finite values dropped)."""
    table = MAP_SFT if kind == "sft" else MAP_RL
    out: dict[str, Any] = {}
    for key, value in data.items():
        v = _number(value)
        if v is None:
            continue
        out[f"verl/{key}"] = v
        if key in table:
            out[table[key]] = v
        elif key.startswith("val-core/") or key.startswith("val-aux/"):
            parts = key.split("/")
            # val-core/<data_source>/<metric>/mean@N
            if len(parts) >= 4 and parts[-1].startswith("mean@") and parts[-2] in VAL_KEYS:
                out.setdefault(VAL_KEYS[parts[-2]], v)
    return out


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        try:
            return _number(value.item())
        except (TypeError, ValueError):
            return None
    if isinstance(value, list) and value and all(isinstance(x, (int, float)) for x in value):
        return sum(value) / len(value)
    return None


def rollout_stats(lines: Iterable[dict[str, Any]], data_source: str | None = None,
                  count_backtracks: Callable[[str, str], int] | None = None) -> dict[str, float]:
    """reward_std / accuracy / format_rate / backtracks_mean from one step's rollout dump,
    computed as the local engine does (scores are 0, 0.1 or 1.0; std is unbiased)."""
    scores, backtracks = [], []
    for row in lines:
        s = row.get("score")
        if s is None:
            continue
        scores.append(float(s))
        if count_backtracks is not None and data_source and isinstance(row.get("output"), str):
            try:
                backtracks.append(int(count_backtracks(data_source, row["output"])))
            except Exception:       # a bad completion never breaks metrics
                pass
    if not scores:
        return {}
    n = len(scores)
    mean = sum(scores) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in scores) / (n - 1)) if n > 1 else 0.0
    out = {"reward_std": std, "accuracy": sum(x == 1.0 for x in scores) / n,
           "format_rate": sum(x > 0 for x in scores) / n, "rollout_samples": n}
    if backtracks:
        out["backtracks_mean"] = sum(backtracks) / len(backtracks)
    return out


class _Tail:
    """New complete lines of a growing file."""

    def __init__(self, path: Path):
        self.path, self.pos, self.buf = Path(path), 0, b""

    def read(self) -> list[str]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.pos:          # truncated (a new attempt re-opened it): start over
            self.pos, self.buf = 0, b""
        with open(self.path, "rb") as fh:
            fh.seek(self.pos)
            chunk = fh.read()
        self.pos += len(chunk)
        data = self.buf + chunk
        *lines, self.buf = data.split(b"\n")
        return [ln.decode("utf-8", "replace") for ln in lines if ln.strip()]


class Bridge:
    """Tail verl's metrics file (and RL rollout dumps) into a Tracker.

    `poll()` is cheap; call it every second or so while verl runs and `close()` at the end.
    Steps at or below `resume_step` are ignored (already in metrics.jsonl from the attempt that
    wrote the checkpoint we resumed from). An RL step's row waits up to `wait_polls` polls for
    its rollout dump, which verl writes in a background thread."""

    def __init__(self, tracker, log_file: Path, kind: str, *, rollout_dir: Path | None = None,
                 data_source: str | None = None, resume_step: int = 0, keep_dumps: bool = False,
                 count_backtracks: Callable[[str, str], int] | None = None, wait_polls: int = 30):
        self.tracker, self.kind = tracker, kind
        self.tail = _Tail(log_file)
        self.rollout_dir = Path(rollout_dir) if rollout_dir else None
        self.data_source, self.keep_dumps = data_source, keep_dumps
        self.count_backtracks = count_backtracks
        self.resume_step = int(resume_step)
        self.wait_polls = wait_polls
        self.pending: dict[int, tuple[dict, int]] = {}   # step -> (row, polls waited)
        self.last_step = int(resume_step)
        self.rows_logged = 0
        self.last_row: dict[str, Any] = {}
        self._sizes: dict[int, int] = {}

    def _dump(self, step: int) -> Path | None:
        if self.rollout_dir is None:
            return None
        p = self.rollout_dir / f"{step}.jsonl"
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            return None
        # verl writes dumps from a background thread: use one only once its size is stable
        stable = self._sizes.get(step) == size
        self._sizes[step] = size
        return p if stable else None

    def poll(self, final: bool = False) -> int:
        for line in self.tail.read():
            try:
                rec = json.loads(line)
                step, data = int(rec["step"]), rec.get("data") or {}
            except (ValueError, KeyError, TypeError):
                continue
            if step <= self.resume_step and self.kind != "eval" and not (step == 0 == self.resume_step):
                continue
            row = map_metrics(data, self.kind)
            if step in self.pending:          # two log calls for one step (e.g. val, then train)
                prev, waited = self.pending[step]
                row = {**prev, **row}
                self.pending[step] = (row, waited)
            else:
                self.pending[step] = (row, 0)
        logged = 0
        for step in sorted(self.pending):
            row, waited = self.pending[step]
            need_dump = self.kind == "rl" and self.rollout_dir is not None and "reward_mean" in row
            dump = self._dump(step) if need_dump else None
            if need_dump and dump is None and final and self.rollout_dir is not None:
                p = self.rollout_dir / f"{step}.jsonl"
                dump = p if p.exists() else None
            if need_dump and dump is None and waited < self.wait_polls and not final:
                self.pending[step] = (row, waited + 1)
                break                         # keep steps in order
            if dump is not None:
                row = {**row, **self._stats(dump)}
            self.tracker.log(step, **row)
            self.last_step, self.last_row = step, row
            del self.pending[step]
            logged += 1
        self.rows_logged += logged
        return logged

    def _stats(self, dump: Path) -> dict[str, float]:
        rows = []
        with open(dump, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
        stats = rollout_stats(rows, self.data_source, self.count_backtracks)
        if not self.keep_dumps:
            try:
                os.unlink(dump)
            except OSError:
                pass
        return stats

    def close(self) -> None:
        self.poll(final=True)


def latest_checkpoint_step(ckpt_dir: Path) -> int:
    """verl's newest finished checkpoint (latest_checkpointed_iteration.txt), 0 if none."""
    p = Path(ckpt_dir) / "latest_checkpointed_iteration.txt"
    try:
        step = int(p.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0
    return step if (Path(ckpt_dir) / f"global_step_{step}").is_dir() else 0
