"""Which tasks exist: one line per task, imported lazily so `import reasoning360.tasks` stays cheap."""

from __future__ import annotations

import importlib

from .base import Task, TaskError

# name -> "module:Class". A new task registers with one line here (or `register(...)` at runtime).
_SPECS: dict[str, str] = {
    "countdown": "reasoning360.tasks.countdown:CountdownTask",
    "sudoku": "reasoning360.tasks.sudoku:SudokuTask",
    "arc_1d": "reasoning360.tasks.arc_1d:Arc1DTask",
    "advanced_geometry": "reasoning360.tasks.geometry:AdvancedGeometryTask",
    "knights_knaves": "reasoning360.tasks.knights_knaves:KnightsKnavesTask",
    "color_cube_rotation": "reasoning360.tasks.rl_only:ColorCubeRotationTask",
    "list_functions": "reasoning360.tasks.rl_only:ListFunctionsTask",
    "zebra_puzzles": "reasoning360.tasks.rl_only:ZebraPuzzlesTask",
    "self_reference": "reasoning360.tasks.rl_only:SelfReferenceTask",
    "gsm_symbolic": "reasoning360.tasks.rl_only:GSMSymbolicTask",
}

TASKS: list[str] = list(_SPECS)      # kept in sync by `register`
_INSTANCES: dict[str, Task] = {}


def register(name: str, target: str) -> None:
    """Register `name` -> "package.module:ClassName" (a Task subclass with a no-arg constructor)."""
    if ":" not in target:
        raise TaskError(f"register({name!r}): expected 'module:Class', got {target!r}")
    _SPECS[name] = target
    _INSTANCES.pop(name, None)
    if name not in TASKS:
        TASKS.append(name)


def get_task(name: str) -> Task:
    if not isinstance(name, str) or name not in _SPECS:
        raise TaskError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    if name not in _INSTANCES:
        module, cls = _SPECS[name].split(":")
        task = getattr(importlib.import_module(module), cls)()
        if not task.name:
            task.name = name
        _INSTANCES[name] = task
    return _INSTANCES[name]
