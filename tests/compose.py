"""Compose the project's Hydra config the way `python sweep.py` does, for tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def resolved(*overrides: str) -> dict:
    """The composed config as plain data (what the planner reads), e.g. resolved()["rl"]: the
    configs' own values, so tests that build a spec by hand never invent a default."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_cfg(*overrides), resolve=True)


def fake_checkpoint(path) -> "Path":
    """A directory that passes the planner's checkpoint check (config.json and a tokenizer):
    for tests that plan against model.path / a teacher path and never load the weights."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "tokenizer.json").write_text("{}")
    return path
