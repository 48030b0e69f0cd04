"""Helpers shared by the verl tests (no tests here): compose our config and verl's, plan the
paper study, make a tiny local HF model + data. Nothing downloads."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

HAVE_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(
    not HAVE_VERL, reason="verl is not installed (bash scripts/install.sh test,verl)")

CPU_PARAMS = {"min_numbers": 3, "max_numbers": 3, "min_value": 1, "max_value": 20,
              "min_target": 10, "max_target": 100}
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def verl_config_dir() -> str:
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def paper_plan(engine: str, model_dir: Path, root: Path, *extra: str):
    """Our config composed as `python sweep.py +grid=backtrack scale=paper engine=... launcher=slurm`
    would, and planned. Returns (resolved config, plan, store)."""
    from compose import compose_cfg
    from reasoning360.sweep.main import build

    cfg = compose_cfg("+grid=backtrack", "scale=paper", f"engine={engine}", "launcher=slurm",
                      f"model.path={model_dir}", f"paths.root={root}", *extra)
    c, plan, store, _ = build(cfg)
    return c, plan, store


def tiny_model(path: Path) -> Path:
    """A ~100k-parameter Llama with the local engine's char tokenizer and a chat template: an
    ordinary HF directory that verl's HFModelConfig, AutoTokenizer and datasets load."""
    if (path / "config.json").exists():
        return path
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from reasoning360.engines.local.checkpoint import save_hf
    from reasoning360.engines.local.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    # Llama, not Qwen2: AutoTokenizer maps model_type qwen2 to Qwen2Tokenizer, which replaces the
    # char tokenizer's (absent) pre-tokenizer and drops whitespace.
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    path.mkdir(parents=True, exist_ok=True)
    save_hf(model, tok, path)      # the local engine's writer: tokenizer_class PreTrainedTokenizerFast
    return path


def small_data(root: Path, k: int = 1) -> tuple[Path, Path]:
    """A data stage and a traces stage (k backtracks) built by reasoning360.tasks at CPU scale."""
    from reasoning360.tasks import build_data, build_traces

    data, traces = root / "data", root / "traces"
    if not (data / "train.parquet").exists():
        build_data({"kind": "data", "task": "countdown", "params": CPU_PARAMS,
                    "sizes": {"sft": 6, "train": 8, "val": 2, "test": 4}, "template": "qwen-instruct",
                    "seed": 0}, data, show_progress=False)
    if not (traces / "sft.parquet").exists():
        build_traces({"kind": "traces", "task": "countdown", "data": "d", "k": k, "style": "paper",
                      "seed": 0}, data, traces, show_progress=False)
    return data, traces
