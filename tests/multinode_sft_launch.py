"""Rank 0 of a multi-node job (run by `python -m reasoning360.ray.probe ... --run`, so the job's
Ray cluster, interface and rendezvous port are set up as for a stage): render the SFT launch
command exactly as the verl engine does (engines/verl/launch.py sft_command: srun --overlap over
the job's nodes, torchrun with a c10d rendezvous on the head), swap verl's trainer module for
tests/multinode_ddp_step.py, and run it the way the engine runs it (launch.run_process).

Then the negative control: the same command without GLOO_SOCKET_IFNAME, so that gloo guesses
the address from the hostname (127.0.1.1 on these nodes); it must fail (within
R360_TEST_GLOO_TIMEOUT), not pass.

usage: python tests/multinode_sft_launch.py OUT_DIR        (exit code: the first run's)
"""

import json
import os
import sys
from pathlib import Path


def run(out: Path, extra_env: dict, drop: tuple = ()) -> tuple[int | None, list, list]:
    from reasoning360.engines.verl import launch

    for k in drop:
        os.environ.pop(k, None)
    nnodes = int(os.environ["SLURM_JOB_NUM_NODES"])
    overrides = ["trainer.total_epochs=1", "model.partial_pretrain=/nonexistent"]
    env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "R360_TEST_OUT": str(out), **extra_env}
    cmd = launch.sft_command(overrides, nnodes=nnodes, gpus_per_node=1, python=sys.executable,
                             port=int(os.environ["R360_RDZV_PORT"]), env=env)
    rendered = list(cmd)
    cmd[cmd.index(launch.SFT_MODULE)] = "multinode_ddp_step"
    rc = launch.run_process(cmd, log_path=out / "torchrun.log", poll_s=0.5, grace_s=10)
    return rc, rendered, cmd


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rc, rendered, ran = run(out, {})
    res = {"rc": rc, "rendered": rendered, "ran": ran}
    (out / "cmd.json").write_text(json.dumps(res))
    neg = out / "no-ifname"
    neg.mkdir(exist_ok=True)
    res["rc_no_ifname"], _, _ = run(neg, {"R360_TEST_GLOO_TIMEOUT": "10"},
                                    drop=("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"))
    (out / "cmd.json").write_text(json.dumps(res))
    print(f"torchrun exited {rc}; without GLOO_SOCKET_IFNAME {res['rc_no_ifname']}", flush=True)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
