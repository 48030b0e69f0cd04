"""What every engine's eval stage writes: items.parquet (one row per test item) and the
summary the results table and the analysis read, so both engines report the same numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_path


def summarize(items: list[dict[str, Any]]) -> dict[str, Any]:
    n = max(len(items), 1)
    return {"accuracy": sum(it["correct"] for it in items) / n,
            "format_rate": sum(it["format_ok"] for it in items) / n,
            "mean_score": sum(it["score"] for it in items) / n,
            "mean_response_tokens": sum(it["response_tokens"] for it in items) / n,
            "mean_backtracks": sum(it["backtracks"] for it in items) / n,
            "n": len(items)}


def write_items(path: Path, items: list[dict[str, Any]]) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(items).to_parquet(tmp, index=False)
