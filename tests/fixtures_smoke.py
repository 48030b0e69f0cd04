"""Session fixture `smoke_sweep`: the directory of a finished `python sweep.py +grid=smoke`
(2 points of countdown, k = 0 and 1, the local engine end to end; ~1-3 min on 2 cores).

It runs once per test session into a temporary R360_ROOT and returns
`<root>/sweeps/smoke` (its store is `<root>/store`). Set R360_SMOKE_SWEEP to the sweep
directory of a finished smoke sweep to reuse it instead. Tests that use it are skipped, with
the reason, while the local engine is not importable; a smoke run that fails fails them.

Register it in a test module (or conftest.py) with:
    from fixtures_smoke import smoke_sweep  # noqa: F401
The sweep is built once per process even when several modules import the fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1500
_cache: dict[str, object] = {}


def build_smoke(root: Path, *overrides: str) -> Path:
    """Run the smoke sweep into `root` (R360_ROOT); return its sweep directory.
    Raises RuntimeError with the output's tail when the sweep fails."""
    env = {**os.environ, "R360_ROOT": str(root), "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "sweep.py", "+grid=smoke", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    sweep = root / "sweeps" / "smoke"
    if proc.returncode != 0 or not (sweep / "plan.json").exists():
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
        raise RuntimeError(f"python sweep.py +grid=smoke failed (rc={proc.returncode}):\n{tail}")
    return sweep


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> Path:
    given = os.environ.get("R360_SMOKE_SWEEP")
    if given:
        path = Path(given)
        if not (path / "plan.json").exists():
            pytest.fail(f"R360_SMOKE_SWEEP={given} is not a sweep directory (no plan.json)")
        return path
    if "dir" not in _cache and "error" not in _cache:
        root = tmp_path_factory.mktemp("smoke_root")
        try:
            _cache["dir"] = build_smoke(root)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            _cache["error"] = str(e)
    if "error" in _cache:
        pytest.fail(str(_cache["error"]))
    return _cache["dir"]  # type: ignore[return-value]
