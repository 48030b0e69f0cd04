"""Stands in for verl's SFT trainer module under the exact torchrun command verl's SFT path
renders (tests/test_multinode.py): the trainer needs GPUs, the rendezvous does not. One gloo
DDP step (its gradient all-reduce) and one explicit all-reduce; each rank writes what it saw.

usage (by torchrun): python -m multinode_ddp_step OUT_DIR [hydra overrides, recorded only]
"""

import json
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    out = Path(os.environ["R360_TEST_OUT"])
    dist.init_process_group("gloo", timeout=timedelta(seconds=int(os.environ.get("R360_TEST_GLOO_TIMEOUT", "60"))))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)                       # different data per rank, same initial weights
    model = torch.nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.fill_(0.5), model.bias.fill_(0.0)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ddp(torch.randn(8, 4)).pow(2).mean().backward()   # DDP averages the gradients over the ranks
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    Path(out).mkdir(parents=True, exist_ok=True)
    (out / f"rank-{rank}.json").write_text(json.dumps({
        "rank": rank, "world": world, "host": socket.gethostname(), "sum": total.item(),
        "grad": model.weight.grad.flatten().tolist(), "argv": sys.argv[1:],
        "master": f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
        "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME")}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
