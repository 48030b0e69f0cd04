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

from .answer import MAX_ANSWER_CHARS, call_with_timeout, count_markers, extract_answer
from .base import Problem, Task, TaskError
from .prompts import Prompt, authors_prompt, compact

COMPACT_BACKTRACK = "^"
COMPACT_FAILED = "!"      # an attempt's failed check (compact), where a trace's dead end backtracks
STYLES = ("compact", "paper")

_SKIP = (ValueError, IndexError, KeyError, RuntimeError, AssertionError, ZeroDivisionError)


def finish(think: str, answer: str) -> str:
    """The completion format of `compact` traces."""
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def finish_paper(think: str, answer: str) -> str:
    """The end of the authors' traces: a blank line between the tags (reasoning_gym/games/
    sudoku.py:264-267, create_backtrack_datasets.py:79 of their fork)."""
    return f"<think>{think}</think>\n\n<answer>{answer}</answer>"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def check_k(name: str, k: Any, style: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise TaskError(f"{name}: k must be a non-negative integer, got {k!r}")
    if style not in STYLES:
        raise TaskError(f"{name}: unknown trace style {style!r}; known: {', '.join(STYLES)}")


def check_style(name: str, style: Any) -> None:
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
    PAPER_MARKERS: tuple[str, ...] = ()                 # one per dead end of a `paper` trace
    FILTER_PARAMS: dict[str, Any] = {}                  # own filters -> their value when off
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

    def split_params(self, params: dict[str, Any], split: str) -> dict[str, Any]:
        """Dead-end filters (`FILTER_PARAMS`, e.g. min_dead_ends) apply only to the splits named
        in `filter_splits`: only SFT traces need k dead ends per problem, and a filtered test
        set would not be the task's distribution."""
        if not self.FILTER_PARAMS or "filter_splits" not in self.OWN_PARAMS:
            return params
        if split in self.own(params)["filter_splits"]:
            return params
        return {**params, **self.FILTER_PARAMS}

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

    def prompt(self, problem: Problem, template: str) -> Prompt:
        if template == "compact":
            return compact(self.compact_prompt(problem))
        return self.authors_prompt(problem, template)

    def authors_prompt(self, problem: Problem, template: str) -> Prompt:
        """The pattern of the authors' RL-only tasks (reasoning-gym/color_cube_rotation.py,
        list_functions.py, self_reference.py: make_prefix), with this task's answer example;
        tasks with their own make_prefix override this."""
        ex = self.answer_example(problem)
        return authors_prompt(
            template, self.question_text(problem), sep="\n",
            think=("Show your work in <think> </think> tags, and return the answer in <answer> </answer>. "
                   f"For example <answer> {ex} </answer>."),
            plain=f"Return the answer in <answer> </answer>. For example <answer> {ex} </answer>.")

    # ---- traces (tasks with backtrack SFT override these)
    def trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        check_k(self.name, k, style)
        if not self.backtrack_sft:
            raise TaskError(f"task {self.name!r} is RL-only: no backtrack traces")
        return self.make_trace(problem, k, style, rng)

    def make_trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        raise NotImplementedError

    def attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        check_style(self.name, style)
        return self.make_attempt(problem, style, rng)

    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
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

    def is_correct(self, answer: str, gt: Any, compact: bool = False) -> bool:
        """The answer (stripped) is right. `compact`: the prompt had no prefill (the compact
        template), so the compact answer format is accepted besides the authors' format."""
        raise NotImplementedError

    def score(self, completion: str, ground_truth: dict[str, Any], prefill: str = "") -> float:
        gt = self.parse_gt(ground_truth)
        return call_with_timeout(self._score, completion, gt, prefill, seconds=1.0, default=0.0)

    def _score(self, completion: Any, gt: Any, prefill: str = "") -> float:
        answer = extract_answer(completion, prefill)
        if answer is None:
            return 0.0
        if len(answer) > MAX_ANSWER_CHARS:
            return 0.1                       # well-formed; no answer of any task is this long
        if not answer.isascii() and any(ord(ch) > 127 and ch not in self.ANSWER_EXTRA_CHARS for ch in answer):
            return 0.1                       # look-alike digits, spaces, letters: never correct
        try:
            return 1.0 if self.is_correct(answer, gt, compact=not prefill) else 0.1
        except (ValueError, TypeError, KeyError, IndexError, ArithmeticError, RecursionError):
            return 0.1

    def count_backtracks(self, completion: str) -> int:
        """Compact dead ends end their line with `^` (a stray `^` in an answer is not one);
        paper dead ends say the task's `PAPER_MARKERS` phrase once each."""
        return count_markers(completion, COMPACT_BACKTRACK + "\n") + sum(
            count_markers(completion, m) for m in self.PAPER_MARKERS)


def gt_error(name: str, gt: Any) -> TaskError:
    return TaskError(f"{name}: malformed ground truth {str(gt)[:200]!r}")


def int_list(x: Any) -> bool:
    return isinstance(x, list) and all(type(v) is int for v in x)
