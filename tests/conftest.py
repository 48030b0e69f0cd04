"""Shared fixtures: `slurm_cluster` (tests/slurm_cluster.py) starts the local Slurm cluster once
per session for the tests that ask for it; `virtual_cluster` the virtual multi-node one."""

from slurm_cluster import slurm_cluster, virtual_cluster  # noqa: F401  (registers the fixtures)
