"""The contract every task implements: problems, prompts, k-backtrack traces, a verifier.

A task is a search problem from reasoning-gym plus the pieces this suite adds: a trace
synthesiser (a search program, not a sampled model) and an exact 0 / 0.1 / 1.0 reward.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class TaskError(ValueError):
    """A request the task cannot satisfy (unknown task, impossible k, bad parameter)."""


@dataclass
class Problem:
    question: str                 # the statement in words (prompts are built from it)
    answer: str                   # one canonical correct answer (what a trace's <answer> holds)
    ground_truth: dict[str, Any]  # JSON-able: everything the verifier needs
    metadata: dict[str, Any] = field(default_factory=dict)  # difficulty, source item, ...


class Task(ABC):
    name: str = ""
    backtrack_sft: bool = True     # False for RL-only tasks
    PAPER_MARKERS: tuple[str, ...] = ()   # the phrase a `paper` dead end says once (highlighting, counts)

    @abstractmethod
    def generate(self, size: int, seed: int, params: dict[str, Any]) -> list[Problem]:
        """`size` problems from reasoning-gym; same (size, seed, params) -> same problems."""

    @abstractmethod
    def key(self, problem: Problem) -> str:
        """Identity of a problem, used to keep the splits disjoint."""

    @abstractmethod
    def prompt(self, problem: Problem, template: str):
        """The `prompts.Prompt` for `template` in {compact, base, qwen-instruct, baseline}: its
        exact text and its prefill (`reasoning360.tasks.prompts`)."""

    @abstractmethod
    def trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        """A completion from its own `<think>` to `</answer>` with exactly k distinct dead ends,
        each ending in an explicit backtrack, then the solution (`compact`:
        `<think>...</think>\\n<answer>...</answer>`; `paper`: the authors' wording, ending
        `</think>\\n\\n<answer>...</answer>`). Raises TaskError when the problem cannot supply
        k distinct dead ends."""

    @abstractmethod
    def attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """One attempted solution without search (what a pretrained base model writes before RL):
        a single candidate drawn by `rng` with no look-ahead toward the answer, worked out in the
        surface format of the style's k=0 trace, its verdict stated where the trace states one
        (a failed check says so and the attempt ends: no backtrack, count_backtracks == 0), then
        its own answer, right or wrong. Always well-formed (score 0.1 or 1.0); correct only when
        the draw happens to be; the same rng state gives the same text."""

    @abstractmethod
    def max_backtracks(self, problem: Problem) -> int:
        """How many distinct dead ends this problem can supply."""

    def max_k(self, params: dict[str, Any]) -> int:
        """The largest k every instance at `params` can supply (checked before a sweep starts).
        Cheap. This default takes the minimum of `max_backtracks` over a few generated problems
        (an estimate); tasks override it with an analytic bound where they have one."""
        problems = self.generate(16, 0, params)
        return min((self.max_backtracks(p) for p in problems), default=0)

    def validate_params(self, params: dict[str, Any]) -> None:
        """Raise TaskError naming a generator parameter the task does not accept."""

    def split_params(self, params: dict[str, Any], split: str) -> dict[str, Any]:
        """The generator parameters of one split (sft, train, val, test): a task whose SFT split
        needs more (dead-end filters) or another problem set narrows the others here."""
        return params

    @abstractmethod
    def score(self, completion: str, ground_truth: dict[str, Any], prefill: str = "") -> float:
        """0.0 malformed, 0.1 well-formed but wrong, 1.0 correct, on `prefill + completion`
        (the authors' format rule, `answer.extract_answer`). Bounded in time and size; never
        raises on any string."""

    @abstractmethod
    def count_backtracks(self, completion: str) -> int:
        """Backtrack steps in a completion (for traces and for model outputs alike)."""
