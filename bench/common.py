"""What the benches share: the project's configs read as plain dicts."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def cfg(name: str) -> dict:
    """configs/<name>.yaml, e.g. cfg("sft/default")."""
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())


# The scale=cpu countdown problems, from the task's own config.
CPU_PARAMS = cfg("task/countdown")["params"]["cpu"]
