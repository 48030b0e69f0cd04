"""Slurm and Ray plumbing: site profiles and resources, sbatch rendering and submission,
squeue/sacct queries, the per-job Ray cluster, the Ray rollout pool, and the `r360`
commands that act on a submitted sweep (status, watch, logs, cancel, resubmit, render).

    resources.py     site profile + per-stage-kind resources, checked against the partition
    slurm_query.py   one call each to scontrol / squeue --json / sacct --json, parsed
    arrays.py        the plan -> job arrays (chunks, throttles, aftercorr/afterok dependencies)
    sbatch.py        sbatch text (submitit's writer) and submission (submitit's executor)
    submit.py        validate -> squeue once -> arrays -> sbatch -> jobs.json (launch, resubmit, render)
    jobs.py          jobs.json: what was submitted, so reruns skip what is queued
    job.py           what a job runs: one stage, Ray around it, USR2 -> checkpoint -> requeue
    ray_bootstrap.py a Ray cluster over the job's nodes, torn down by PID
    localslurm/      start-slurm.sh / stop-slurm.sh: the single-node test cluster (root, Debian)
    ray_rollout.py   N Ray actors sampling rollouts for the local GRPO
    status.py        a stage's state from its directory + Slurm
    commands.py      r360 status / watch / logs / cancel / resubmit / render
"""
