"""Content addresses: a stage's id is a hash of exactly the config that determines its output.

Two sweeps that need the same SFT run get the same id, so the second reuses the first's
result. Keys are sorted and floats normalised so that `1e-4` and `0.0001` hash alike.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any


def canonical(obj: Any) -> str:
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"))


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 2**53:
        return int(obj)
    return obj


def digest(spec: dict[str, Any], length: int = 12) -> str:
    return hashlib.sha256(canonical(spec).encode()).hexdigest()[:length]


def stage_id(spec: dict[str, Any]) -> str:
    """`<kind>-<label>-<hash>`: the label is cosmetic (derived from the spec), the hash decides."""
    label = "-".join(str(p) for p in (spec.get("task"), _k_label(spec)) if p not in (None, ""))
    label = re.sub(r"[^A-Za-z0-9_.]+", "_", label)
    return "-".join(p for p in (spec["kind"], label, digest(spec)) if p)


def _k_label(spec: dict[str, Any]) -> str:
    if spec.get("k") is not None:
        return f"k{spec['k']}"
    return spec.get("source") or ""          # a distill stage: short_cot / long_cot
