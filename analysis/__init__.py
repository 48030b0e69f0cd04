"""Analysis of sweeps: load a sweep directory into pandas, aggregate with bootstrap CIs,
plot, and write the report (`r360 report SWEEP [SWEEP_B ...]`).

    from analysis import load_sweep
    sweep = load_sweep("runs/sweeps/backtrack")
    sweep.points, sweep.stages, sweep.evals, sweep.steps, sweep.items, sweep.missing
"""

from .load import Sweep, load_sweep

__all__ = ["Sweep", "load_sweep"]
