"""Entry point: `python sweep.py +grid=backtrack [overrides...]`.

Composes configs/ with Hydra, validates every point, plans the stages and runs them
(launcher=local) or submits them as Slurm job arrays (launcher=slurm).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from reasoning360.sweep.main import main_cli

    main_cli(cfg)


if __name__ == "__main__":
    main()
