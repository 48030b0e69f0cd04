"""The reward function verl calls: `reward.custom_reward_function.path=<this file>`,
`reward.custom_reward_function.name=compute_score`.

verl loads this file by path inside its reward-loop Ray workers, so it imports the project by
absolute name (and finds the checkout next to it if the package is not installed there). The
score is exactly the local engine's: `reasoning360.tasks.score` (0 malformed, 0.1 well-formed
but wrong, 1.0 correct; hardened parsers bounded in time and size). The returned dict's extra
keys become verl's `reward_extra_info` (validation metrics val-core/<task>/acc/mean@N).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    from reasoning360.tasks import score as _score
except ImportError:                 # loaded by path in a worker whose sys.path lacks the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from reasoning360.tasks import score as _score


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None,
                  **kwargs: Any) -> dict[str, float]:
    """verl's custom reward signature. Returns {"score", "acc", "format_ok"}; `score` is the reward."""
    if isinstance(ground_truth, bytes):
        ground_truth = ground_truth.decode("utf-8", "replace")
    text = solution_str if isinstance(solution_str, str) else str(solution_str)
    s = float(_score(str(data_source), text, ground_truth))
    return {"score": s, "acc": float(s == 1.0), "format_ok": float(s > 0.0)}
