"""What every engine's eval stage writes: items.parquet (one row per step, protocol, sample and
test item) and the summary the results table and the analysis read, so both engines report the
same numbers."""

from __future__ import annotations

from math import comb
from pathlib import Path
from typing import Any

from ..atomic import atomic_path


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


def write_items(path: Path, items: list[dict[str, Any]]) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(items).to_parquet(tmp, index=False)
