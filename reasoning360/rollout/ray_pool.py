"""GRPO rollouts in N Ray actors (`rollout.workers=N`), for the local engine.

`RayRolloutPool` implements RolloutEngine (reasoning360/rollout/base.py):
`generate(prompt_ids, sampling)` splits the prompts into N contiguous shards, one per actor,
each sampling with its own engine of `rollout.backend` (registry.make_backend) (the built-in KV-cache sampler on its copy of the
model, or its own vLLM engine), and returns the completions in prompt order;
`update_weights(state_dict)` puts the new weights in the object store once (`ray.put`) and
every actor loads them from there, once per training step.

Inside a Slurm job the pool joins the job's Ray cluster (RAY_ADDRESS, set by
ray_bootstrap); elsewhere it starts a private local Ray and shuts it down on close().
Each actor holds an engine of the configured backend (`builtin`: the KV-cache sampler;
`vllm`: reasoning360.rollout.vllm.VLLMRollout with `settings`). A shard starting at prompt p
samples with seed + p*n, so the vLLM backend draws what one engine would; the built-in
sampler is reproducible for a fixed N.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import replace
from typing import Any, Sequence

_ACTOR_CLS = None


def _actor_cls():
    global _ACTOR_CLS
    if _ACTOR_CLS is None:
        import ray

        @ray.remote
        class RolloutWorker:
            """One rollout engine of the configured backend on its own copy of the model."""

            def __init__(self, model, tokenizer, threads: int, device: str, backend: str, settings):
                import torch

                from reasoning360.rollout.registry import make_backend

                torch.set_num_threads(max(1, int(threads)))
                model = model.to(torch.device(device)).eval()
                self.engine = make_backend(backend, model, tokenizer, settings)
                self.device = device

            def generate(self, prompt_ids, sampling):
                return self.engine.generate(prompt_ids, sampling)

            def load(self, state_dict) -> int:
                self.engine.update_weights({k: v.to(self.device) for k, v in state_dict.items()})
                return os.getpid()

            def pid(self) -> int:
                return os.getpid()

            def close(self) -> None:
                self.engine.close()

        _ACTOR_CLS = RolloutWorker
    return _ACTOR_CLS


class RayRolloutPool:
    def __init__(self, model, tokenizer, workers: int, *, backend: str, settings: dict[str, Any] | None,
                 threads_per_worker: int, device: str | None = None):
        """settings: the backend's own block (rollout.vllm for vLLM); device: where each actor's
        model lives (default: where `model` is)."""
        import ray

        if workers < 1:
            raise ValueError(f"rollout.workers={workers}: the Ray pool needs at least 1 worker")
        self._owns_ray = False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            else:    # no job cluster (local launcher): a private Ray for this stage
                ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False,
                         logging_level="ERROR", log_to_driver=False)
                self._owns_ray = True
        self.workers = int(workers)
        self.recompute_old_logprobs = backend == "vllm"    # GRPO: trainer recomputes, logs the gap
        dev = device or str(next(model.parameters()).device)
        res = ray.cluster_resources()
        cpu = min(1.0, float(res.get("CPU", 1.0)) / self.workers)
        gpu = 0.0
        if dev.startswith("cuda"):
            gpu = min(1.0, float(res.get("GPU", 0.0)) / self.workers)
        cpu_model = copy.deepcopy(model).to("cpu")
        model_ref = ray.put(cpu_model)
        del cpu_model
        cls = _actor_cls()
        self.actors = [cls.options(num_cpus=cpu, num_gpus=gpu, scheduling_strategy="SPREAD")
                       .remote(model_ref, tokenizer, threads_per_worker, dev if gpu else "cpu", backend, settings)
                       for _ in range(self.workers)]
        self.pids = ray.get([a.pid.remote() for a in self.actors])
        self.broadcasts = 0
        print(f"[ray-rollout] {self.workers} rollout workers up (pids {', '.join(map(str, self.pids))}) "
              f"on {ray.get_runtime_context().gcs_address}", flush=True)

    def generate(self, prompt_ids: Sequence[Sequence[int]], sampling):
        import ray

        from .base import RolloutOutput

        t0 = time.perf_counter()
        prompts = list(prompt_ids)
        k = min(self.workers, len(prompts))
        bounds = [round(i * len(prompts) / k) for i in range(k + 1)]
        futures = []
        n = max(1, int(getattr(sampling, "n", 1) or 1))
        for i in range(k):   # shard i draws from seed + (its first prompt's index) * n, as one engine would
            sp = sampling if sampling.seed is None else replace(sampling, seed=int(sampling.seed) + bounds[i] * n)
            futures.append(self.actors[i].generate.remote(prompts[bounds[i]:bounds[i + 1]], sp))
        outs = ray.get(futures)
        completions = [group for o in outs for group in o.completions]
        secs = time.perf_counter() - t0
        tokens = sum(int(o.stats.get("tokens", 0)) for o in outs)
        return RolloutOutput(completions, {"seconds": secs, "tokens": tokens,
                                           "tokens_per_s": tokens / max(secs, 1e-9),
                                           "decode_steps": max(int(o.stats.get("decode_steps", 0)) for o in outs),
                                           "workers": k})

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        import ray

        ref = ray.put({k: v.detach().to("cpu") for k, v in state_dict.items()})   # once per step
        ray.get([a.load.remote(ref) for a in self.actors])
        self.broadcasts += 1

    def close(self) -> None:
        import ray

        if getattr(self, "actors", None):
            print(f"[ray-rollout] closing {len(self.actors)} workers after {self.broadcasts} weight "
                  "broadcast(s)", flush=True)
        try:      # let each engine shut down its own processes (vLLM's engine core)
            ray.get([a.close.remote() for a in getattr(self, "actors", [])], timeout=60)
        except Exception:
            pass
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False
