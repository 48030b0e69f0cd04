"""The rollout interface: what GRPO and eval call, whatever generates the tokens.

A backend (builtin KV-cache sampler, vLLM, a Ray pool of either) implements `RolloutEngine`:
`generate(prompt_ids, sampling)` returns, per prompt, `sampling.n` completions with the per-token
log-probs GRPO uses as its old log-probs; `update_weights(state_dict)` makes the next
generate sample from the trainer's current policy; `close()` releases processes and memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class SamplingParams:
    """What is sampled (rl.rollout / eval settings); every field is given by the caller."""
    n: int                        # samples per prompt (GRPO group size)
    temperature: float            # 0 = greedy
    top_p: float
    max_new_tokens: int
    seed: int | None              # None: use the global torch RNG


@dataclass
class Completion:
    token_ids: list[int]          # generated ids, the stop token included when it was produced
    logprobs: list[float]         # log p(token) under softmax(logits / T) (T=1 when greedy)
    text: str                     # decoded without special tokens
    finished: bool                # stopped on a stop token (False: hit max_new_tokens)


@dataclass
class RolloutOutput:
    completions: list[list[Completion]]   # [prompt][sample]
    stats: dict[str, float] = field(default_factory=dict)


class RolloutEngine(Protocol):
    def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams) -> RolloutOutput: ...

    def update_weights(self, state_dict: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
