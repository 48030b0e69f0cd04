"""Tasks: reasoning-gym problems, k-backtrack traces, exact rewards, dataset builders.

    get_task(name) -> Task            TASKS (registered names)
    score(data_source, completion, ground_truth, prefill=None) -> float in {0.0, 0.1, 1.0}
    count_backtracks(data_source, completion) -> int
    validate_point(task_name, k, params)          raises TaskError in one line
    build_data(spec, out_dir) / build_traces(spec, data_dir, out_dir) / load_rows(path)
    build_attempts(spec, data_dir, out_dir)       the pretraining corpus (attempts without search)
"""

from __future__ import annotations

import json
from typing import Any

from .base import Problem, Task, TaskError
from .data import PREFILL_KEY, build_attempts, build_data, build_traces, load_rows
from .registry import TASKS, get_task, register

__all__ = ["Problem", "Task", "TaskError", "TASKS", "get_task", "register", "score",
           "count_backtracks", "validate_point", "build_data", "build_traces", "build_attempts", "load_rows"]


def _ground_truth(ground_truth: Any) -> dict:
    if isinstance(ground_truth, (str, bytes)):
        try:
            ground_truth = json.loads(ground_truth)
        except ValueError:
            raise TaskError(f"ground truth is not JSON: {str(ground_truth)[:200]!r}") from None
    if not isinstance(ground_truth, dict):
        raise TaskError(f"ground truth must be a dict or its JSON, got {type(ground_truth).__name__}")
    return ground_truth


def score(data_source: str, completion: str, ground_truth: str | dict, prefill: str | None = None) -> float:
    """0.0 malformed, 0.1 well-formed but wrong, 1.0 correct, with the authors' format rule on
    `prefill + completion`. The prefill (the assistant part of the prompt, `prompts.Prompt`) is
    the ground truth's "prefill" key, which the data stage writes into every row, unless given
    here; a ground truth without one (a bare problem, a compact row) has none. Never raises on
    any completion (a bad data_source, ground truth or prefill is a bug upstream: TaskError)."""
    gt = dict(_ground_truth(ground_truth))
    stored = gt.pop(PREFILL_KEY, "")
    prefill = stored if prefill is None else prefill
    if not isinstance(prefill, str):
        raise TaskError(f"prefill must be a string, got {type(prefill).__name__}")
    return get_task(data_source).score(completion, gt, prefill)


def count_backtracks(data_source: str, completion: str) -> int:
    return get_task(data_source).count_backtracks(completion)


def validate_point(task_name: str, k: Any, params: dict) -> None:
    """Raise TaskError (one line, naming the bad value) if a grid point cannot be built.
    k=None means a baseline without backtrack SFT data: only the task and params are checked."""
    task = get_task(task_name)
    if not isinstance(params, dict):
        raise TaskError(f"task {task_name!r}: params must be a mapping, got {params!r}")
    task.validate_params(params)
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int):
        raise TaskError(f"task {task_name!r}: k must be an integer, got {k!r}")
    if k < 0:
        raise TaskError(f"task {task_name!r}: k must be >= 0, got k={k}")
    if not task.backtrack_sft:
        raise TaskError(f"task {task_name!r} is RL-only: no backtrack traces, got k={k}")
    limit = task.max_k(params)
    if k > limit:
        raise TaskError(f"task {task_name!r}: k={k} exceeds the {limit} distinct dead ends every "
                        f"problem can supply at params {params}")
