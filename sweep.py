"""Entry point: `python sweep.py +grid=backtrack [overrides...]`.

Composes configs/ with Hydra, validates every point, plans the stages and runs them
(launcher=local) or submits them as Slurm job arrays (launcher=slurm).
"""

import os

# Before torch is imported: with the default (active) OpenMP wait policy, two busy threads on
# a 2-core machine slow a training step ~10x when any other process runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import sys

    from reasoning360.launchers import run_sweep

    sys.exit(run_sweep(cfg))


if __name__ == "__main__":
    main()
