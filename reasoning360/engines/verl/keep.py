"""Models kept at given steps (sft.export_steps, rl.eval_steps) although verl prunes its checkpoints.

A later stage needs the model of a step that is not the last: RL starts from the SFT model of
rl.init_step, the rl_eval stage evaluates the RL models of rl.eval_steps. The local engine
writes them as `models/step_<N>/` (engines.context.model_dir); verl writes sharded checkpoints
every trainer.save_freq steps (the mapping makes every kept step a multiple of it) and deletes
all but the newest trainer.max_ckpt_to_keep. So a kept step's checkpoint is set aside when it
appears, by hard links (no copy, no extra disk until verl deletes the original; optimizer and
RNG shards left out), into `kept_checkpoints/global_step_N/`, and merged into
`models/step_<N>/` by verl's model merger when the stage's run ends; the snapshot is then
removed.

Who sets it aside: for RL, verl itself, synchronously after each save, through its checkpoint
hook (`trainer.checkpoint_callback_class` = `SnapshotOnSave`, in the driver) — nothing can prune
it first. verl's SFT trainer has no such hook: the stage's polling loop (`Keeper.poll`, every
second while verl runs) does it; a checkpoint lives at least one save interval, and a step that
was pruned unseen is a one-line error naming the keys to change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

SNAP_DIR = "kept_checkpoints"
# FSDP shards that a model export does not need (optimizer state, RNG / scheduler state, data order)
_SKIP_PREFIXES = ("optim_", "extra_state_", "data_", "data.pt")


class KeepError(RuntimeError):
    """A kept step whose checkpoint verl pruned before it could be kept."""


def _latest(ckpt_dir: Path) -> int:
    try:
        return int((Path(ckpt_dir) / "latest_checkpointed_iteration.txt").read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def snapshot(step_dir: Path, dest: Path) -> Path:
    """Hard-link the model part of one verl checkpoint (global_step_N; RL: its actor/) into
    `dest`, atomically (a copy where links are not possible). Kept when already there."""
    from ...atomic import atomic_dir

    dest = Path(dest)
    if dest.is_dir():
        return dest
    src = Path(step_dir) / "actor" if (Path(step_dir) / "actor").is_dir() else Path(step_dir)
    with atomic_dir(dest) as tmp:
        for root, _dirs, files in os.walk(src):
            rel = Path(root).relative_to(src)
            (Path(tmp) / rel).mkdir(parents=True, exist_ok=True)
            for f in files:
                if rel == Path(".") and f.startswith(_SKIP_PREFIXES):
                    continue
                s, d = Path(root) / f, Path(tmp) / rel / f
                try:
                    os.link(s, d)
                except OSError:
                    shutil.copy2(s, d)
    return dest


class Keeper:
    """The kept steps of one stage: `poll()` while verl runs (sets aside what appeared),
    `finish()` when it has ended (merges every kept step into models/step_<N>/)."""

    def __init__(self, stage_dir: Path, ckpt_dir: Path, steps: list[int], *, python: str, backend: str,
                 keys: str):
        from ..context import model_dir

        self.stage, self.ckpt = Path(stage_dir), Path(ckpt_dir)
        self.python, self.backend, self.keys = python, backend, keys
        self.steps = [int(s) for s in steps if not (model_dir(self.stage, s) / "config.json").exists()]

    def snap(self, step: int) -> Path:
        return self.stage / SNAP_DIR / f"global_step_{step}"

    def poll(self) -> None:
        latest = _latest(self.ckpt)
        for step in self.steps:
            src = self.ckpt / f"global_step_{step}"
            if step <= latest and src.is_dir() and not self.snap(step).is_dir():
                try:
                    snapshot(src, self.snap(step))
                except FileNotFoundError:       # pruned while being linked: finish() says so
                    pass

    def finish(self) -> list[Path]:
        from ..context import model_dir
        from .data import merge_checkpoint

        self.poll()
        out = []
        for step in self.steps:
            src = self.snap(step) if self.snap(step).is_dir() else self.ckpt / f"global_step_{step}"
            if not src.is_dir():
                raise KeepError(f"{self.keys}: verl pruned its checkpoint of step {step} before the stage could keep "
                                "it; keep more checkpoints (keep_checkpoints) or save less often (save_every)")
            out.append(merge_checkpoint(src, model_dir(self.stage, step), python=self.python, backend=self.backend))
            shutil.rmtree(self.snap(step), ignore_errors=True)
        try:
            (self.stage / SNAP_DIR).rmdir()           # gone once every kept step is merged
        except OSError:
            pass
        return out


class SnapshotOnSave:
    """verl's checkpoint hook (trainer.checkpoint_callback_class; verl.trainer.ppo.checkpoint_callback):
    called in the driver right after each save, before any later save can prune it. Sets aside
    the checkpoint of every step listed in $R360_KEEP_STEPS (comma-separated), into the stage's
    kept_checkpoints/ (the stage directory is the parent of trainer.default_local_dir)."""

    def __init__(self, config: Any = None):
        self.config = config

    def on_save(self, trainer: Any = None, global_step: int = 0, checkpoint_dir: str = "",
                async_save: bool = False, **kwargs: Any) -> None:
        from .overrides import KEEP_ENV

        steps = {int(x) for x in os.environ[KEEP_ENV].split(",") if x.strip()}   # set with the hook
        if int(global_step) not in steps or async_save:
            return
        step_dir = Path(checkpoint_dir)
        snapshot(step_dir, step_dir.parent.parent / SNAP_DIR / step_dir.name)
