"""What every engine's eval stage writes: items.parquet (one row per step, protocol, sample and
test item) and the summary the results table and the analysis read, so both engines report the
same numbers. The local engine and the verl engine build each item with `make_item`, each
protocol's numbers with `summarize`, the stage's summary with `stage_summary` and its
metrics.jsonl row with `summary_metrics`."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path
from typing import Any, Callable

from ..atomic import atomic_path


def make_item(row: dict[str, Any], i: int, sample: int, prompt: str, response: str, n_tokens: int,
              finished: bool | None, score: Callable[[str, str, str], float],
              count_backtracks: Callable[[str, str], int], ground_truth: str) -> dict[str, Any]:
    """One answer to test row `row` (position `i` of the split): its score by the task's verifier,
    format, length, backtracks and the item's difficulty."""
    extra = row.get("extra_info") or {}
    meta = extra.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
    difficulty = (meta or {}).get("difficulty") if isinstance(meta, dict) else None
    sc = float(score(row["data_source"], response, ground_truth))
    return {
        "index": int(extra.get("index", i)), "sample": sample, "question": extra.get("question", ""),
        "prompt": prompt, "response": response, "score": sc, "correct": sc == 1.0,
        "format_ok": sc > 0.0, "response_tokens": int(n_tokens), "finished": finished,
        "backtracks": int(count_backtracks(row["data_source"], response)),
        "difficulty": json.dumps(difficulty, sort_keys=True) if difficulty is not None else None,
    }


def summarize(items: list[dict[str, Any]], n_samples: int = 1) -> dict[str, Any]:
    """Means over every answer (item x sample), and, with n_samples > 1, pass@k for k = 1, 2,
    4, ... <= n (the unbiased estimator 1 - C(n-c, k) / C(n, k) per item, averaged)."""
    n = max(len(items), 1)
    out: dict[str, Any] = {
        "accuracy": sum(it["correct"] for it in items) / n,
        "format_rate": sum(it["format_ok"] for it in items) / n,
        "mean_score": sum(it["score"] for it in items) / n,
        "mean_response_tokens": sum(it["response_tokens"] for it in items) / n,
        "mean_backtracks": sum(it["backtracks"] for it in items) / n,
        "n": len(items) // max(n_samples, 1), "samples": n_samples}
    if n_samples > 1:
        correct: dict[int, int] = {}
        for it in items:
            correct[it["index"]] = correct.get(it["index"], 0) + bool(it["correct"])
        k = 1
        while k <= n_samples:
            out[f"pass@{k}"] = sum(1 - comb(n_samples - c, k) / comb(n_samples, k)
                                   for c in correct.values()) / max(len(correct), 1)
            k *= 2
    return out


def step_label(spec: dict[str, Any], step: int | None) -> int:
    """The step an evaluated model is reported under: N for the model kept at step N, the
    upstream stage's final step (`final_step`) for its final model."""
    return int(spec["final_step"]) if step is None else int(step)


def stage_summary(spec: dict[str, Any], by_step: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The eval stage's summary: the primary protocol's numbers at the last evaluated step as
    `accuracy`, `format_rate`, ..., and every step x protocol under `by_step`."""
    cfg = spec["eval"]
    last = by_step[str(step_label(spec, spec["steps"][-1]))]
    return {**last[cfg["primary"]], "primary": cfg["primary"], "by_step": by_step,
            "seconds": seconds, "split": cfg["split"]}


def summary_metrics(spec: dict[str, Any], out: dict[str, Any]) -> dict[str, float]:
    """The eval stage's metrics.jsonl row (step 0): eval/<key> of the summary and
    eval/<protocol>/<key> of the last evaluated step."""
    last = out["by_step"][str(step_label(spec, spec["steps"][-1]))]
    return {**{f"eval/{k}": v for k, v in out.items() if isinstance(v, (int, float))},
            **{f"eval/{name}/{k}": v for name, s in last.items() for k, v in s.items()
               if isinstance(v, (int, float))}}


def write_items(path: Path, items: list[dict[str, Any]]) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(items).to_parquet(tmp, index=False)
