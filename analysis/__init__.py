"""Analysis of sweeps: load a sweep directory into pandas, estimate every cell and every paired
difference with a two-level bootstrap over seeds and test items, plot, and write the report
(`r360 report SWEEP [SWEEP_B ...]`). See analysis/README.md.

    from analysis import load_sweep
    from analysis.study import study
    sweep = load_sweep("runs/sweeps/backtrack")
    sweep.points, sweep.stages, sweep.evals, sweep.steps, sweep.items, sweep.missing
    st = study(sweep); st.statements(); st.table("sample")
"""

from .load import Sweep, load_sweep

__all__ = ["Sweep", "load_sweep"]
