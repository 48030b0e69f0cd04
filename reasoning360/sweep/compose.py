"""Compose configs/ with Hydra's compose API, turning Hydra's own errors into one line.

`python sweep.py` uses this instead of `@hydra.main`, so that an unknown group option, a YAML
syntax error in a grid file or a node of the wrong type is one line naming the file or key,
not a traceback; `--cfg job` prints the composed config as Hydra's does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

from .grid import CONFIGS
from .schema import ConfigError


def compose(overrides: Sequence[str], config_dir: Path = CONFIGS) -> DictConfig:
    """The composed config for `overrides` (Hydra override syntax), or ConfigError."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = list(overrides)
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key == "task":
            raise ConfigError(f"{o}: tasks are chosen with grid.tasks=[{o.split('=', 1)[-1]}] (task settings "
                              "live under tasks.<name>, e.g. tasks.sudoku.params.cpu.min_empty=8)")
        if key.startswith("task."):
            raise ConfigError(f"{key}: task settings live under tasks.<name> (e.g. tasks.countdown."
                              f"{key[len('task.'):]}=...), one block per task of the grid")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except Exception as e:          # Hydra, OmegaConf and YAML errors: all one line
        raise ConfigError(one_line(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()


def one_line(e: BaseException, overrides: Sequence[str] = ()) -> str:
    """Hydra's / OmegaConf's / PyYAML's error as one line that names the file, key or override."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if type(e).__module__.startswith("yaml"):
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{mark.name}:{mark.line + 1}" if mark is not None else "a YAML file"
        return f"{where}: YAML syntax error ({getattr(e, 'problem', None) or first})"
    m = re.search(r"Could not find '([^']+)'", text)
    if m:
        group, _, name = m.group(1).rpartition("/")
        options = sorted(set(re.findall(r"^\t(\S+)$", text, re.M)))
        where = f"{group}={name}" if group else name
        return f"{where}: no such config (configs/{m.group(1)}.yaml)" + (
            f"; options: {', '.join(options)}" if options else "")
    m = re.match(r"Could not override '([^']+)'", first)
    if m and "To append" in text:
        return (f"{m.group(1)}: not a key of the config (check the spelling against configs/; every knob "
                "lives there, none can be added from the command line)")
    if type(e).__name__ == "OverrideParseException":
        bad = next((o for o in overrides if not _parses(o)), None)
        return f"{bad or 'overrides'}: not a valid override ({first})"
    m = re.search(r"full_key: (\S+)", text)
    key = m.group(1) if m else None
    if key is None:
        m = re.match(r"In '([^']+)'", first)
        key = f"configs/{m.group(1)}.yaml" if m else None
    detail = first if key is None or not first.startswith(key) else first[len(key):].lstrip(": ")
    return f"{key}: {detail}" if key else f"{' '.join(overrides) or 'config'}: {detail}"


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_override(override)
        return True
    except Exception:
        return False
