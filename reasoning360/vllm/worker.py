"""Methods added to vLLM's worker (`LLM(worker_extension_cls=...)`), called through
`LLM.collective_rpc("r360_load_weights", args=(packed,))`.

Why not pass tensors to vLLM's own `reload_weights` directly: across vLLM's engine-core
process boundary, utility-call arguments go through msgpack without type hints, and tensors
come back as plain lists. Here each tensor travels as (name, dtype, shape, raw bytes) and is
rebuilt with `torch.frombuffer` (bf16 included); in-process the tensors pass as they are.
Imported inside vLLM's worker process: keep it free of heavy imports.
"""

from __future__ import annotations

from typing import Any


def pack_state_dict(state_dict: dict[str, Any], as_bytes: bool) -> list[tuple]:
    """[(name, dtype, shape, data)]: data a CPU tensor, or its raw bytes when `as_bytes`."""
    import torch

    out = []
    for name, t in state_dict.items():
        t = t.detach()
        dtype = str(t.dtype).replace("torch.", "")
        if as_bytes:
            c = t.to("cpu").contiguous()
            data = c.view(torch.uint8).numpy().tobytes() if c.numel() else b""
        else:
            data = t
        out.append((name, dtype, list(t.shape), data))
    return out


def unpack(packed: list) -> list[tuple[str, Any]]:
    import torch

    weights = []
    for name, dtype, shape, data in packed:
        if isinstance(data, torch.Tensor):
            t = data
        else:
            dt = getattr(torch, dtype)
            buf = bytearray(data) if not isinstance(data, bytearray) else data
            t = (torch.frombuffer(buf, dtype=dt) if len(buf) else torch.empty(0, dtype=dt)).reshape(shape)
        weights.append((name, t))
    return weights


def _quiet_rotary() -> None:
    """vLLM warns "RotaryEmbedding: Failed to load weights" on every reload: its cos/sin cache
    is a buffer no checkpoint carries, and vLLM keeps it as it was (correct). Drop just that."""
    import logging

    log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if any(getattr(f, "_r360", False) for f in log.filters):
        return

    def keep(record: logging.LogRecord) -> bool:
        return not (record.args and record.args[0] == "RotaryEmbedding"
                    and "Failed to load weights" in str(record.msg))

    keep._r360 = True    # type: ignore[attr-defined]
    log.addFilter(keep)


class WorkerExtension:
    """Mixed into vLLM's worker class by `worker_extension_cls`."""

    def r360_load_weights(self, packed: list) -> int:
        """Reload every weight in place (vLLM's layer-wise reload: load_weights + the layers'
        post-processing, e.g. CPU repacking). Returns the number of tensors received."""
        _quiet_rotary()
        weights = unpack(packed)
        self.reload_weights(weights_iterator=weights)
        return len(weights)

    def r360_weight_norm(self) -> float:
        """Sum of parameter norms of the running model (tests: did a push change anything)."""
        model = self.model_runner.get_model()
        return float(sum(float(p.detach().float().norm()) for p in model.parameters()))
