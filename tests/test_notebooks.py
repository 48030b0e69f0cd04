"""The result notebooks (analysis/notebooks/*.ipynb) run top to bottom, with nbclient, on the
smoke sweep and on a partial synthetic sweep (failed, running and pending points). A cell
that raises fails the test. The sweep is given by R360_SWEEP_DIR, as a user would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis.synthetic import make_sweep
from fixtures_smoke import smoke_sweep  # noqa: F401  (registers the session fixture)

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "analysis" / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, sweep_dir: Path, workdir: Path):
    nb = nbformat.read(str(path), as_version=4)
    old = os.environ.get("R360_SWEEP_DIR")
    os.environ["R360_SWEEP_DIR"] = str(sweep_dir)       # the kernel inherits the environment
    try:
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(workdir)}})
        client.execute()
    finally:
        if old is None:
            os.environ.pop("R360_SWEEP_DIR", None)
        else:
            os.environ["R360_SWEEP_DIR"] = old
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def n_images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} == {"backtrack_study.ipynb", "training_dynamics.ipynb"}
    for p in NOTEBOOKS:
        nb = nbformat.read(str(p), as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{p.name}: clear outputs"
        assert 'os.environ.get("R360_SWEEP_DIR"' in nb.cells[1].source


@pytest.fixture(scope="module")
def partial_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nb_partial")
    return make_sweep(root, tasks=("countdown", "arc_1d"), seeds=(0, 1), sft_steps=20, rl_steps=12,
                      failed={"countdown-k2-s1": "rl", "arc_1d-k0-s0": "sft"}, running={"arc_1d-k1-s1": "rl"},
                      pending=["countdown-cold_start-s1"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_partial_sweep(path, partial_sweep, tmp_path):
    nb = run_notebook(path, partial_sweep, tmp_path)
    text = outputs_text(nb)
    assert "sweep synthetic: 20 points" in text
    assert "countdown-k2-s1: no rl_eval: rl failed" in text
    assert n_images(nb) >= 2
    if path.stem == "backtrack_study":      # the best-k question answered in words
        assert "countdown, after RL, greedy: no k is better than the others at this scale" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_smoke_sweep(path, smoke_sweep, tmp_path):
    nb = run_notebook(path, smoke_sweep, tmp_path)
    text = outputs_text(nb)
    assert "sweep smoke: 2 points (2 done)" in text
    assert n_images(nb) >= 1
