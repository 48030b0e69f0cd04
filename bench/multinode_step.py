"""One GRPO-like rollout step across nodes, timed (run by bench_multinode.py on rank 0 of a
multi-node probe job, inside the job's Ray cluster: RAY_ADDRESS is set).

    python bench/multinode_step.py OUT.json [--steps 5] [--workers 2]

The tiny model of configs/model/tiny.yaml, its rollouts in `--workers` Ray actors
(reasoning360.rollout, as GRPO with rollout.workers=N makes them; the head keeps no Ray CPU, so
they land on the other nodes). Each step: new weights (the trainer's update, here a perturbation)
broadcast to every actor (update_weights: over the network), then one batch of rollouts
(generate). Writes the per-step seconds of both, and where the actors ran.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    import ray
    import torch

    from reasoning360 import atomic
    from reasoning360.engines.local.model import build_model
    from reasoning360.engines.local.tokenizer import load_tokenizer
    from reasoning360.rollout import SamplingParams, make_rollout_engine

    model_cfg = yaml.safe_load((ROOT / "configs" / "model" / "tiny.yaml").read_text())
    rollout_cfg = {**yaml.safe_load((ROOT / "configs" / "rollout" / "builtin.yaml").read_text()),
                   "workers": a.workers}
    tok = load_tokenizer(model_cfg)
    model = build_model(model_cfg, tok, seed=0)
    t0 = time.perf_counter()
    engine = make_rollout_engine(rollout_cfg, model, tok, device="cpu")
    up_s = time.perf_counter() - t0
    hosts = sorted(ray.get([a_.__ray_call__.remote(lambda self: __import__("socket").gethostname())
                            for a_ in engine.actors]))
    prompts = [tok.encode(f"{i} + {i} =") for i in range(8)]
    sp = SamplingParams(n=4, temperature=1.0, top_p=1.0, max_new_tokens=32, seed=0)
    sd = model.state_dict()
    bcast, gen, step = [], [], []
    for s in range(a.steps):
        with torch.no_grad():
            for v in sd.values():
                if v.is_floating_point():
                    v.add_(1e-3)
        t0 = time.perf_counter()
        engine.update_weights(sd)
        t1 = time.perf_counter()
        engine.generate(prompts, sp)
        t2 = time.perf_counter()
        bcast.append(t1 - t0)
        gen.append(t2 - t1)
        step.append(t2 - t0)
    engine.close()
    params = sum(v.numel() for v in sd.values())
    atomic.write_json(Path(a.out), {"workers_up_s": up_s, "actor_hosts": hosts, "params": params,
                                    "broadcast_s": bcast, "generate_s": gen, "step_s": step})
    print(f"[multinode_step] {a.steps} steps on {hosts}: median step "
          f"{sorted(step)[len(step) // 2]:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
