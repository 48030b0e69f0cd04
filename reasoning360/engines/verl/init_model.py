"""The from-scratch starting model for verl: an HF directory written into the stage that needs it.

verl starts from a HuggingFace directory; the tiny model (`model.path: null`) is built from the
config. The SFT stage (or an RL/eval stage with no upstream model, e.g. cold start) writes it
into its own `init_model/` before launching verl: the stage is content-addressed, so the
directory is too, and the weights are exactly the local engine's (`build_model(model, tok,
seed)`: same seed, same weights). A future shared `pretrain` stage replaces this by handing
its `model/` over as the upstream model (`deps["init"]`); nothing else changes.

The character tokenizer gets a chat template that renders exactly what the local engine feeds
its model: `<bos>` + the prompt turns' text, then the assistant turn's text + `<eos>`. verl's
SFT dataset renders each turn alone and concatenates them, so `<bos>` is emitted only before a
first turn that is not the assistant's; the RL dataset renders the prompt with the generation
prompt, which adds nothing. A prompt with a system turn (data.template=qwen-instruct) would get a
second `<bos>` from verl's per-turn rendering: the tiny model's templates (compact, base) have one
user turn (tests/test_verl_equivalence.py checks the tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DIR = "init_model"
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'assistant' %}{{ bos_token }}{% endif %}"
    "{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def write_initial_model(model_cfg: dict[str, Any], seed: int, stage_dir: Path) -> Path:
    """stage_dir/init_model: the seeded from-scratch model + char tokenizer + chat template
    (atomic; kept when already there)."""
    from ...atomic import atomic_dir
    from ..local.checkpoint import save_hf
    from ..local.model import DTYPES, build_model
    from ..local.tokenizer import build_char_tokenizer

    out = Path(stage_dir) / DIR
    if (out / "config.json").exists():
        return out
    if (model_cfg.get("tokenizer") or "char") != "char":
        raise ValueError(f"model.tokenizer={model_cfg.get('tokenizer')!r}: a from-scratch model "
                         "(model.path: null) uses the char tokenizer")
    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    model = build_model(model_cfg, tok, int(seed))
    dtype = DTYPES[str(model_cfg["dtype"])]
    model = model.to(dtype)
    model.config.dtype = dtype
    with atomic_dir(out) as tmp:
        save_hf(model, tok, Path(tmp))
    return out
