"""What a stage's code is handed: its directory, its spec, its inputs, and the hooks
(metrics, progress, preemption) the launcher provides.

Engines never import the sweeper; they read only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..tracking import Tracker


class Preempted(Exception):
    """Raised by an engine after it saved a checkpoint because preemption was requested."""


@dataclass
class PreemptFlag:
    """Set (e.g. from a USR2 handler) to ask the running engine to checkpoint at the next
    step boundary and raise Preempted."""
    requested: bool = False

    def request(self, *_: Any) -> None:
        self.requested = True


@dataclass
class StageContext:
    stage_dir: Path                 # everything the stage writes goes here
    spec: dict[str, Any]            # the hashed spec (what determines the output)
    runtime: dict[str, Any]         # not hashed: device, threads, workers, wandb, ...
    deps: dict[str, Path]           # role -> upstream stage dir ("data", "traces", "init")
    make_tracker: Callable[[int], Tracker]   # resume_step -> tracker (truncates past it)
    preempt: PreemptFlag = field(default_factory=PreemptFlag)
    show_progress: bool = True


def model_dir(stage_dir: str | Path, step: int | None = None) -> Path:
    """Where a training stage leaves a model: `model/` (the final one) or, for a step it was
    asked to keep (sft.export_steps, rl.eval_steps), `models/step_<N>/`. Each is an ordinary
    Hugging Face checkpoint directory that the next stage, an eval or `r360 serve` loads."""
    return Path(stage_dir) / "model" if step is None else Path(stage_dir) / "models" / f"step_{int(step):08d}"


def sft_data_path(spec: dict[str, Any], traces_dir: str | Path) -> Path:
    """The parquet an SFT stage trains on: `sft.parquet` of a traces stage, or the split a
    distill baseline names (`traces_file`). An empty split is an error naming it, not an SFT
    run on nothing."""
    import pyarrow.parquet as pq

    path = Path(traces_dir) / (spec.get("traces_file") or "sft.parquet")
    if not path.exists():
        raise FileNotFoundError(f"{path} missing (the upstream traces/distill stage writes it)")
    if pq.ParquetFile(path).metadata.num_rows == 0:
        raise ValueError(f"{path.name} of {Path(traces_dir).name} has no rows: the teacher gave no such "
                         "answers; sample more (distill.n, distill.temperature) or pick another teacher")
    return path
