"""What the benches share: the project's configs read as plain dicts."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def cfg(name: str) -> dict:
    """configs/<name>.yaml, e.g. cfg("sft/default")."""
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())


# The scale=cpu countdown problems, from the task's own config.
CPU_PARAMS = cfg("task/countdown")["params"]["cpu"]


def setup(args):
    """(runtime, device, model cfg, skipped parts) from the flags both engine benches share:
    --threads, --model (an HF dir; default the random tiny scale=cpu model) and --skip."""
    from reasoning360.engines.local.model import setup_runtime

    runtime = {"device": "auto", "threads": args.threads, "rollout_workers": 0, "rollout_threads_per_worker": 1,
               "rollout_vllm": cfg("rollout/builtin")["vllm"]}
    device = setup_runtime(runtime)
    model_cfg = cfg("model/tiny")
    if args.model is not None:
        model_cfg["path"] = str(args.model.resolve())
    return runtime, device, model_cfg, set(args.skip.split(","))
