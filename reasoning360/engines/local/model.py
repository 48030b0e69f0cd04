"""Models and devices for the local engine.

A stage's policy comes from (in order) its upstream stage's `model/` directory, a local HF
checkpoint at `model.path`, or a seeded random Llama/Qwen2 of the configured size, so the
cold-start, SFT->RL and paper-scale cases all go through one function. No hub ids are ever
passed to `from_pretrained`: only directories that exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...cores import usable_cores
from .tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def setup_runtime(runtime: dict[str, Any]) -> torch.device:
    """Apply `threads` (engine.threads; 0: every core this process may use) and pick the device
    (engine.device; `auto` = cuda when present)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()          # no per-save/load bars in job logs
    threads = int(runtime["threads"])
    torch.set_num_threads(threads if threads > 0 else usable_cores())
    want = str(runtime["device"])
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("engine.device=cuda but no CUDA device is visible")
    return torch.device(want)


def build_config(model_cfg: dict[str, Any], tokenizer):
    """HF config of a from-scratch model: `arch` llama or qwen2 at the configured size."""
    from transformers import LlamaConfig, Qwen2Config

    arch = model_cfg["arch"]
    hidden, heads = int(model_cfg["hidden_size"]), int(model_cfg["num_heads"])
    kv = model_cfg["num_kv_heads"]
    common = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=int(model_cfg["num_layers"]),
        num_attention_heads=heads, num_key_value_heads=int(heads if kv is None else kv),
        intermediate_size=int(model_cfg["intermediate_size"]),
        max_position_embeddings=int(model_cfg["max_seq_len"]),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        rms_norm_eps=1e-5, initializer_range=0.02)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common, use_sliding_window=False)
    raise ValueError(f"model.arch={arch!r}: a model built from scratch is llama or qwen2 (or set model.path)")


def build_model(model_cfg: dict[str, Any], tokenizer, seed: int):
    """A seeded random model: the same seed gives the same weights."""
    from transformers import AutoModelForCausalLM

    cfg = build_config(model_cfg, tokenizer)
    cfg._attn_implementation = "sdpa"
    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_policy(model_cfg: dict[str, Any], init_dir: str | Path | None, seed: int,
                device: torch.device, step: int | None = None):
    """(model, tokenizer): from the upstream stage `init_dir` (its final model, or the one it
    kept at `step`), else `model.path`, else built from scratch."""
    from transformers import AutoModelForCausalLM

    from ..context import model_dir

    src = None
    if init_dir is not None:
        src = model_dir(init_dir, step)
        if not (src / "config.json").exists():
            raise FileNotFoundError(f"upstream stage {init_dir} has no {src.relative_to(init_dir)} "
                                    "(a step it was not asked to keep?)")
    elif model_cfg["path"] is not None:
        src = Path(model_cfg["path"]).expanduser()
        if not (src / "config.json").exists():
            raise FileNotFoundError(f"model.path={src} is not a local HF checkpoint directory")
    tokenizer = load_tokenizer(model_cfg, src)
    dtype = DTYPES[model_cfg["dtype"]]
    if src is not None:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=dtype, attn_implementation="sdpa")
    else:
        model = build_model(model_cfg, tokenizer, seed).to(dtype)
    return model.to(device), tokenizer


def load_reference(model, device: torch.device):
    """A frozen copy of the policy (the KL reference)."""
    import copy

    ref = copy.deepcopy(model).to(device)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
