"""Training checkpoints and final models, written atomically.

A checkpoint is `checkpoints/step_NNNNNNNN/` holding `model/` (a loadable HF directory, so an
intermediate checkpoint can be evaluated like a final one) and `trainer_state.pt` (optimizer,
scheduler, RNG states, data position, step). The directory appears whole or not at all
(atomic_dir), so the newest one present is always safe to resume from.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...atomic import atomic_dir

CKPT_DIR = "checkpoints"


def save_hf(model, tokenizer, out_dir: Path) -> None:
    """save_pretrained for model + tokenizer into an existing directory (safetensors)."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    cfg = out_dir / "tokenizer_config.json"
    if cfg.exists():   # transformers 5 writes its own class name; older readers know this one
        data = json.loads(cfg.read_text())
        if data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
            cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_final_model(stage_dir: Path, model, tokenizer, step: int | None = None) -> Path:
    """The stage's output model (`step` None) or the kept model of step `step`
    (engines.context.model_dir), written atomically as an ordinary HF checkpoint directory."""
    from ..context import model_dir

    path = model_dir(stage_dir, step)
    with atomic_dir(path) as tmp:
        save_hf(model, tokenizer, tmp)
    return path


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(stage_dir: Path, step: int, model, tokenizer, optimizer, scheduler,
                    extra: dict[str, Any] | None = None, keep: int = 1) -> Path:
    """Write checkpoint `step` atomically, then prune all but the newest `keep`."""
    root = Path(stage_dir) / CKPT_DIR
    path = root / f"step_{step:08d}"
    with atomic_dir(path) as tmp:
        save_hf(model, tokenizer, tmp / "model")
        torch.save({"step": step, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "extra": extra or {}}, tmp / "trainer_state.pt")
    for old in list_checkpoints(stage_dir)[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(stage_dir: Path) -> list[Path]:
    root = Path(stage_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / "trainer_state.pt").exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(stage_dir: Path) -> Path | None:
    found = list_checkpoints(stage_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore model weights, optimizer, scheduler and RNG from `path`; returns the state dict
    (its `step` and `extra`)."""
    from safetensors.torch import load_file

    mdir = Path(path) / "model"
    device = str(next(model.parameters()).device)
    files = sorted(mdir.glob("model*.safetensors"))   # one file, or shards of a large model
    if not files:
        raise FileNotFoundError(f"no safetensors in {mdir}")
    weights = {}
    for f in files:
        weights.update(load_file(str(f), device=device))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"checkpoint {path} does not fit the model: missing={missing} "
                           f"unexpected={unexpected}")
    state = torch.load(Path(path) / "trainer_state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
