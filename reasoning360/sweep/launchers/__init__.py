"""Launchers turn a plan into running stages: `local` in this process, `slurm` as job arrays."""
