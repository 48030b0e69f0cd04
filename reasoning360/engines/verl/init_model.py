"""The from-scratch starting model for verl: an HF directory written into the stage that needs it.

verl starts from a HuggingFace directory; the tiny model (`model.path: null`) is built from the
config. The SFT stage (or an RL/eval stage with no upstream model, e.g. cold start) writes it
into its own `init_model/` before launching verl: the stage is content-addressed, so the
directory is too, and the weights are exactly the local engine's (`build_model(model, tok,
seed)`: same seed, same weights). Where the sweep has a `pretrain` stage (scale=cpu), the SFT /
RL stages start from its `model/` (`deps["init"]`) and none of this is written.

The saved tokenizer carries the template verl is given anyway (`data.chat_template_for`: the
stored prompt verbatim after the char tokenizer's `<bos>`, the response + `<eos>`), so the
directory renders the same ids wherever it is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DIR = "init_model"


def write_initial_model(model_cfg: dict[str, Any], seed: int, stage_dir: Path) -> Path:
    """stage_dir/init_model: the seeded from-scratch model + char tokenizer + chat template
    (atomic; kept when already there)."""
    from ...atomic import atomic_dir
    from ..local.checkpoint import save_hf
    from ..local.model import DTYPES, build_model
    from ..local.tokenizer import build_char_tokenizer
    from .data import chat_template_for

    out = Path(stage_dir) / DIR
    if (out / "config.json").exists():
        return out
    if model_cfg["tokenizer"] != "char":
        raise ValueError(f"model.tokenizer={model_cfg['tokenizer']!r}: a from-scratch model "
                         "(model.path: null) uses the char tokenizer")
    tok = build_char_tokenizer()
    tok.chat_template = chat_template_for(tok)
    model = build_model(model_cfg, tok, int(seed))
    dtype = DTYPES[str(model_cfg["dtype"])]
    model = model.to(dtype)
    model.config.dtype = dtype
    with atomic_dir(out) as tmp:
        save_hf(model, tok, Path(tmp))
    return out
