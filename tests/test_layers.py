"""The layering holds (issue #12): no import circle in reasoning360, no import from a lower layer
up to a higher one (tests/layers.py: atomic/cores/progress/tracking -> tasks -> engines/rollout/
vllm/ray -> sweep/stages -> cluster/launchers/slurm -> cli/serve), tasks and engines never
import the sweeper, the stage kinds or a launcher, and analysis never imports a launcher.
Data flows one way: config -> plan -> jobs -> stage dirs -> analysis."""

from __future__ import annotations

from pathlib import Path

import layers

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "reasoning360"


def test_no_circle_and_no_upward_import():
    edges = layers.graph(PKG)
    assert len(edges) > 50                          # it read the package
    assert sum(map(len, edges.values())) > 100      # ... and its imports
    assert layers.circles(edges) == []
    assert layers.upward(edges) == []
    assert layers.main([str(PKG)]) == 0


def test_tasks_and_engines_never_import_the_sweeper_the_stages_or_a_launcher():
    edges = layers.graph(PKG)
    higher = ("reasoning360.sweep", "reasoning360.stages", "reasoning360.launchers", "reasoning360.cluster")
    bad = [(m, t) for m, ts in edges.items() for t in ts
           if m.startswith(("reasoning360.tasks", "reasoning360.engines"))
           and (t.startswith(higher) or t in higher)]
    assert bad == []


def test_analysis_never_imports_a_launcher():
    known = {**layers.modules(PKG), **layers.modules(ROOT / "analysis")}
    analysis = {m: f for m, f in known.items() if m.split(".")[0] == "analysis"}
    assert len(analysis) > 5
    used = {t for m, f in analysis.items() for t in layers.imports(m, f, known)}
    assert any(t.startswith("reasoning360.") for t in used)     # it does read the library ...
    assert sorted(t for t in used if t.startswith("reasoning360.launchers")) == []   # ... never a launcher


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / "reasoning360" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root / "reasoning360"


def test_the_check_finds_a_circle_and_an_upward_import(tmp_path, capsys):
    """The check itself: a package with a circle (relative imports, a function-level one
    included) and a task importing the sweeper is refused, naming both."""
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "tasks/__init__.py": "",
        "tasks/a.py": "def f():\n    from ..sweep import plan\n",          # tasks -> sweep: upward
        "sweep/__init__.py": "",
        "sweep/plan.py": "from . import grid\n",
        "sweep/grid.py": "def g():\n    import reasoning360.sweep.plan\n",   # plan <-> grid: a circle
        "atomic.py": "from reasoning360.tasks import a\n",                  # atomic -> tasks: upward
    })
    edges = layers.graph(pkg)
    assert layers.circles(edges) == [["reasoning360.sweep.grid", "reasoning360.sweep.plan"]]
    up = layers.upward(edges)
    assert ("reasoning360.atomic", "reasoning360.tasks.a") in up
    assert ("reasoning360.tasks.a", "reasoning360.sweep.plan") in up
    assert {m for m, _ in up} == {"reasoning360.atomic", "reasoning360.tasks.a"}
    assert layers.main([str(pkg)]) == 1
    assert "import circles: 1" in capsys.readouterr().out
