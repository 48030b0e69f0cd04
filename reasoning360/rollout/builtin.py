"""`rollout.backend=builtin`: the KV-cache sampler (reasoning360.rollout.sampler) on the
policy model itself, in the trainer's process."""

from __future__ import annotations

from typing import Any

from .base import RolloutOutput, SamplingParams
from .sampler import generate


class BuiltinRollout:
    """In-process rollout on the policy model itself (update_weights is then a no-op unless
    the weights come from another model)."""

    recompute_old_logprobs = False      # the sampler's log-probs equal a forward pass in fp32

    def __init__(self, model, tokenizer, settings: dict[str, Any] | None = None):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompt_ids, sampling: SamplingParams) -> RolloutOutput:
        return generate(self.model, self.tokenizer, prompt_ids, sampling)

    def update_weights(self, state_dict) -> None:
        own = self.model.state_dict()
        if any(own[k].data_ptr() != v.data_ptr() for k, v in state_dict.items() if k in own):
            self.model.load_state_dict(state_dict)

    def close(self) -> None:
        pass
