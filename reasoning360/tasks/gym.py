"""The shared part of every reasoning-gym task after countdown: parameters, problems, prompts,
the bounded 0 / 0.1 / 1.0 reward and the backtrack markers.

A subclass names its reasoning-gym dataset, turns one generated item into a `Problem` (or
None to skip it), writes its compact prompt, checks an answer string exactly, and (for tasks
with backtrack SFT) synthesises traces. Parameters are reasoning-gym's config fields plus the
task's own (`OWN_PARAMS`, e.g. `min_dead_ends`), which never reach reasoning-gym.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from typing import Any

from .answer import call_with_timeout, count_markers, split_think_answer
from .base import Problem, Task, TaskError

COMPACT_BACKTRACK = "^"
PAPER_BACKTRACK = "This doesn't work, go back"
STYLES = ("compact", "paper")
TEMPLATES = ("compact", "base", "qwen-instruct", "baseline")

SYSTEM_PROMPT = ("You are a helpful assistant. You first think about the reasoning process in the "
                 "mind and then provide the user with the answer.")
BASE_PREAMBLE = ("A conversation between User and Assistant. The user asks a question, and the "
                 "Assistant solves it. The assistant first thinks about the reasoning process in "
                 "the mind and then provides the user with the answer.")

_SKIP = (ValueError, IndexError, KeyError, RuntimeError, AssertionError, ZeroDivisionError)


def finish(think: str, answer: str) -> str:
    """The completion format every trace uses."""
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def check_k(name: str, k: Any, style: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise TaskError(f"{name}: k must be a non-negative integer, got {k!r}")
    if style not in STYLES:
        raise TaskError(f"{name}: unknown trace style {style!r}; known: {', '.join(STYLES)}")


def pick(name: str, pool: list, k: int, rng: random.Random, what: str = "distinct dead ends") -> list:
    """k distinct elements of `pool` (already distinct), chosen by rng, in pool order."""
    if k > len(pool):
        raise TaskError(f"{name}: k={k} exceeds the {len(pool)} {what} this problem can supply")
    idx = sorted(rng.sample(range(len(pool)), k))
    return [pool[i] for i in idx]


class GymTask(Task):
    """A Task over one reasoning-gym dataset (subclasses fill in the task-specific parts)."""

    dataset: str = ""                                   # reasoning-gym dataset name
    OWN_PARAMS: dict[str, Any] = {}                     # our parameters -> default value
    ANSWER_EXAMPLE: str = "..."                         # shown in the answer-format instructions
    OVERDRAW = 8                                        # items drawn per problem wanted (skips)
    SEED_GLOBAL_RANDOM = False                          # the generator uses the global `random`
    ANSWER_EXTRA_CHARS = ""                             # non-ASCII characters an answer may hold

    # ---- parameters
    def gym_dataset(self, params: dict[str, Any]) -> str:
        return self.dataset

    def _config_cls(self, params: dict[str, Any]):
        from reasoning_gym.factory import DATASETS

        return DATASETS[self.gym_dataset(params)][1]

    def own(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: params.get(k, v) for k, v in self.OWN_PARAMS.items()}

    def gym_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k not in self.OWN_PARAMS}

    def validate_params(self, params: dict[str, Any]) -> None:
        if not isinstance(params, dict):
            raise TaskError(f"{self.name}: params must be a mapping, got {params!r}")
        for key, v in self.OWN_PARAMS.items():
            got = params.get(key, v)
            if type(got) is not type(v):
                raise TaskError(f"{self.name}: parameter {key} must be {type(v).__name__}, got {got!r}")
        cls = self._config_cls(params)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        known = (set(fields) - {"seed", "size"}) | set(self.OWN_PARAMS)
        for key in params:
            if key not in known:
                raise TaskError(f"{self.name}: unknown parameter {key!r} (known: {', '.join(sorted(known))})")
        gym = self.gym_params(params)
        for key, v in gym.items():
            f = fields[key]
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            ok = True
            if isinstance(default, bool):
                ok = isinstance(v, bool)
            elif isinstance(default, int):
                ok = isinstance(v, int) and not isinstance(v, bool)
            elif isinstance(default, float):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            elif isinstance(default, list):
                ok = isinstance(v, list)
            if not ok:
                raise TaskError(f"{self.name}: parameter {key} must be {type(default).__name__}, got {v!r}")
        try:
            cls(**gym).validate()
        except (AssertionError, ValueError, TypeError) as e:
            raise TaskError(f"{self.name}: bad parameters {params}: {e}") from None
        self.check_own(params)

    def check_own(self, params: dict[str, Any]) -> None:
        """Task-specific checks of the combined parameters (raise TaskError)."""

    # ---- problems
    def make_problem(self, item: dict, params: dict[str, Any]) -> Problem | None:
        raise NotImplementedError

    def generate(self, size: int, seed: int, params: dict[str, Any]) -> list[Problem]:
        import reasoning_gym

        self.validate_params(params)
        if size <= 0:
            return []
        limit = self.OVERDRAW * size + 64
        ds = reasoning_gym.create_dataset(self.gym_dataset(params), size=limit, seed=seed,
                                          **self.gym_params(params))
        out: list[Problem] = []
        for idx in range(limit):
            try:
                item = self._item(ds, idx, seed)
                problem = self.make_problem(item, params)
            except _SKIP:            # reasoning-gym gave up on this index
                continue
            if problem is None:
                continue
            problem.metadata.setdefault("source_dataset", self.gym_dataset(params))
            problem.metadata["source_index"] = idx
            problem.metadata["seed"] = seed
            out.append(problem)
            if len(out) == size:
                return out
        raise TaskError(f"{self.name}: only {len(out)} of {size} problems could be generated at "
                        f"params {params} (seed {seed}; {limit} items drawn)")

    def _item(self, ds, idx: int, seed: int) -> dict:
        if not self.SEED_GLOBAL_RANDOM:
            return ds[idx]
        state = random.getstate()          # seeded per item, restored after: reproducible items
        random.seed(f"{self.name}:{seed}:{idx}")
        try:
            return ds[idx]
        finally:
            random.setstate(state)

    def key(self, problem: Problem) -> str:
        return digest(problem.ground_truth)

    # ---- prompts
    def question_text(self, problem: Problem) -> str:
        return problem.question

    def compact_prompt(self, problem: Problem) -> str:
        """ASCII, short: what the tiny character model reads. Default: the question itself."""
        return problem.question.encode("ascii", "replace").decode() + "\n"

    def answer_example(self, problem: Problem) -> str:
        """The format of an answer, shown in the prompt (never this problem's answer)."""
        return self.ANSWER_EXAMPLE

    def prompt(self, problem: Problem, template: str) -> list[dict[str, str]]:
        q = self.question_text(problem)
        tags = ("Show your work in <think> </think> tags. And return the final answer in "
                f"<answer> </answer> tags, for example <answer> {self.answer_example(problem)} </answer>.")
        if template == "compact":
            return [{"role": "user", "content": self.compact_prompt(problem)}]
        if template == "qwen-instruct":
            return [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": f"{q}\n{tags}"}]
        if template == "base":
            return [{"role": "user", "content": f"{BASE_PREAMBLE}\nUser: {q}\n{tags}\nAssistant:"}]
        if template == "baseline":
            return [{"role": "user", "content": (
                f"{q}\nThink in <think> </think> tags, then give only the final answer in "
                "<answer> </answer> tags.")}]
        raise TaskError(f"{self.name}: unknown template {template!r}; known: {', '.join(TEMPLATES)}")

    # ---- traces (tasks with backtrack SFT override these)
    def trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        check_k(self.name, k, style)
        if not self.backtrack_sft:
            raise TaskError(f"task {self.name!r} is RL-only: no backtrack traces")
        return self.make_trace(problem, k, style, rng)

    def make_trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        raise NotImplementedError

    def max_backtracks(self, problem: Problem) -> int:
        return 0

    def max_k(self, params: dict[str, Any]) -> int:
        self.validate_params(params)
        return 0

    # ---- reward
    def parse_gt(self, gt: Any) -> Any:
        """The verifier's view of a ground truth; raise TaskError when malformed."""
        return gt

    def is_correct(self, answer: str, gt: Any) -> bool:
        raise NotImplementedError

    def score(self, completion: str, ground_truth: dict[str, Any]) -> float:
        gt = self.parse_gt(ground_truth)
        return call_with_timeout(self._score, completion, gt, seconds=1.0, default=0.0)

    def _score(self, completion: Any, gt: Any) -> float:
        parts = split_think_answer(completion)
        if parts is None:
            return 0.0
        answer = parts[1].strip(" \t\n")
        if not answer.isascii() and any(ord(ch) > 127 and ch not in self.ANSWER_EXTRA_CHARS for ch in answer):
            return 0.1                       # look-alike digits, spaces, letters: never correct
        try:
            return 1.0 if self.is_correct(answer, gt) else 0.1
        except (ValueError, TypeError, KeyError, IndexError, ArithmeticError, RecursionError):
            return 0.1

    def count_backtracks(self, completion: str) -> int:
        # A compact dead end ends its line with `^`; a stray `^` in a sampled answer is not one.
        return count_markers(completion, COMPACT_BACKTRACK + "\n") + count_markers(completion, PAPER_BACKTRACK)


def gt_error(name: str, gt: Any) -> TaskError:
    return TaskError(f"{name}: malformed ground truth {str(gt)[:200]!r}")


def int_list(x: Any) -> bool:
    return isinstance(x, list) and all(type(v) is int for v in x)
