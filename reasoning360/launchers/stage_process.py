"""The process a local pool's stage runs in, forked from a server that imported torch once.

Why: a fresh `python -m reasoning360.sweep.runner` spends ~3 CPU-seconds importing torch and the
engines before its stage does anything, and the default study runs ~120 stages. The pool starts
its stages through multiprocessing's forkserver with this module preloaded, so each stage is a
fork of a process that already holds those imports (and has started no thread: the server only
imports, so forking it is safe). The stage itself is what `python -m reasoning360.sweep.runner`
runs (`runner.main`), in its own session, its output in its log, with the pool's environment of
the moment it starts.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading

# read by OpenMP when torch loads, below: with the default (active) wait policy, two busy
# threads on a 2-core machine slow a training step ~10x whenever another process runs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402,F401  (the import this server exists to share)

from reasoning360 import stages  # noqa: E402
from reasoning360.sweep import runner  # noqa: E402


def _preload() -> None:
    """Import every stage kind's code and the local engine's modules (not verl's: a machine
    without verl runs the local engine without it), and what they import lazily inside their
    functions: transformers resolves its classes on first attribute access (the model classes,
    the LR schedules, the fast tokenizer pull in torch._dynamo, accelerate, peft: ~5 CPU-s) and
    the tasks load reasoning-gym; without these every stage paid them again. Not pandas or
    pyarrow: pyarrow starts jemalloc's background thread, and the server forks, so it starts none."""
    for kind in stages.kinds():
        kind.runner()
    from reasoning360.engines.local import evaluate, grpo, sft  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers
    from transformers.models.llama import modeling_llama  # noqa: F401
    from transformers.models.qwen2 import modeling_qwen2  # noqa: F401
    from transformers.utils import logging  # noqa: F401

    for name in ("AutoModelForCausalLM", "AutoTokenizer", "PreTrainedTokenizerFast", "LlamaConfig", "Qwen2Config",
                 "get_constant_schedule_with_warmup", "get_cosine_schedule_with_warmup",
                 "get_linear_schedule_with_warmup"):
        getattr(transformers, name)
    from reasoning360 import tasks

    for name in tasks.TASKS:      # each task's module and the reasoning-gym code behind it
        try:
            tasks.get_task(name)
        except Exception:         # noqa: BLE001  (a stage of that task reports it, in its own log)
            pass


_preload()


def run(store: str, stage_id: str, threads: int, log: str, env: dict[str, str], pool_pid: int) -> None:
    """The child: detach from the terminal's Ctrl-C (the pool forwards it as USR2), die with the
    pool, write to `log`, take the pool's environment, run the stage; exit code as the runner's."""
    os.setsid()
    _die_with(pool_pid)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    sys.exit(runner.main([store, stage_id, "--threads", str(threads)]))


def _die_with(pid: int) -> None:
    """SIGTERM this stage when the pool dies (even by SIGKILL), so a rerun never finds the stage
    locked by an orphan. Not PR_SET_PDEATHSIG: the parent is the fork server, which outlives
    the pool while any stage holds multiprocessing's keep-alive pipe, as every stage does."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(143)

    def watch() -> None:
        select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="die-with-pool", daemon=True).start()
