"""Entry point: `python sweep.py +grid=backtrack [overrides...]`.

Composes configs/ (Hydra's compose API and override syntax), validates every key and point,
plans the stages and runs them (launcher=local) or submits them as Slurm job arrays
(launcher=slurm). A bad input is one line naming the key or file, exit code 2, before anything
is written. `--cfg job` prints the composed config; `--help` this text.
"""

import os
import sys

# Before torch is imported: with the default (active) OpenMP wait policy, two busy threads on
# a 2-core machine slow a training step ~10x when any other process runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str]) -> int:
    from rich.console import Console

    from reasoning360.sweep.compose import compose
    from reasoning360.sweep.schema import ConfigError

    err = Console(stderr=True)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nGroups: configs/<group>/*.yaml; grids: configs/grid/ (+grid=NAME); "
              "see README.md.")
        return 0
    show = None
    if len(argv) >= 2 and argv[0] in ("--cfg", "-c"):
        show, argv = argv[1], argv[2:]
        if show not in ("job", "all"):
            err.print(f"[bold red]error:[/] --cfg: expected job or all, got {show!r}", highlight=False,
                      soft_wrap=True)
            return 2
    if any(a in ("-m", "--multirun") for a in argv):
        err.print("[bold red]error:[/] -m/--multirun: a sweep is one run; sweep values with grid.axes "
                  "(e.g. 'grid.axes={rl.kl_coef:[0.0,0.01]}') or grid.seeds", highlight=False, soft_wrap=True)
        return 2
    try:
        cfg = compose(argv)
    except ConfigError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    if show is not None:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return 0
    from reasoning360.launchers import run_sweep

    return run_sweep(cfg, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
