"""Countdown: combine the given numbers with + - * / into the target, each number used once.

Problems come from reasoning-gym's `countdown` generator. Traces come from a search program:
a move picks two numbers x >= y of the current list and replaces them by x+y, x-y, x*y or x/y
(exact division, y != 0), so every intermediate is a non-negative integer; a complete path
(one number left) that differs from the target is a dead end. A k-backtrack trace shows k
distinct dead ends (in DFS enumeration order), each stating its result, comparing it with the
target and ending in an explicit backtrack marker, then the solution path and its answer.

Two renderings of one search:

* ``compact`` (the tiny character model)::

    <think>12+7=19,19-3=16!=22^
    12+3=15,15+7=22==22</think>
    <answer>(12+3)+7</answer>

* ``paper`` (Stream-of-Search wording as in the published countdown traces)::

    <think>
    Current State: 22:[3, 7, 12], Operations: []
    Exploring Operation: 12+7=19, Resulting Numbers: [3, 19]
    ...
    16,22 unequal: No Solution
    This doesn't work, go back to Node #0,4.
    ...
    22,22 equal: Goal Reached
    </think>
    <answer>(12+3)+7</answer>
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Any, Iterator

from .answer import call_with_timeout, count_markers, split_think_answer
from .arith import ArithError, evaluate
from .base import Problem, Task, TaskError

OPS = "+-*/"
COMPACT_BACKTRACK = "^"
PAPER_BACKTRACK = "This doesn't work, go back"
STYLES = ("compact", "paper")
TEMPLATES = ("compact", "base", "qwen-instruct", "baseline")

EXHAUSTIVE_MAX_NUMBERS = 4     # up to 4 numbers (<= 1,152 paths) every path is enumerated
COUNT_CAP = 10_000             # max_backtracks stops counting here
SOLVE_BUDGET = 200_000         # node expansions for the solution search on big instances

SYSTEM_PROMPT = ("You are a helpful assistant. You first think about the reasoning process in the "
                 "mind and then provide the user with the answer.")
BASE_PREAMBLE = ("A conversation between User and Assistant. The user asks a question, and the "
                 "Assistant solves it. The assistant first thinks about the reasoning process in "
                 "the mind and then provides the user with the answer.")


def _task_text(numbers: list[int], target: int) -> str:
    return (f"Using the numbers {numbers}, create an equation that equals {target}. You can use "
            "basic arithmetic operations (+, -, *, /) and each number can only be used once. "
            "Show your work in <think> </think> tags. And return the final answer in "
            "<answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.")


# ---------------------------------------------------------------- search

@dataclasses.dataclass(frozen=True)
class Step:
    x: int
    op: str
    y: int
    r: int

    def __str__(self) -> str:
        return f"{self.x}{self.op}{self.y}={self.r}"


# a state is a tuple of (value, expression) pairs, in the SoS order: remaining + [result]
State = tuple[tuple[int, str], ...]


def _value_moves(vals: tuple[int, ...]) -> list[tuple[int, int, int, str, int, int]]:
    """Distinct moves (i, j, x, op, y, x op y) on a list of values in DFS enumeration order: pairs i<j,
    then + - * /; an operation already offered by another pair (duplicate numbers) is skipped."""
    out: list[tuple[int, int, int, str, int, int]] = []
    seen: set[tuple[int, str, int]] = set()
    for i, j in itertools.combinations(range(len(vals)), 2):
        a, b = vals[i], vals[j]
        x, y = (a, b) if a >= b else (b, a)
        for op in OPS:
            if op == "+":
                r = x + y
            elif op == "-":
                r = x - y
            elif op == "*":
                r = x * y
            else:
                if y == 0 or x % y:
                    continue
                r = x // y
            if (x, op, y) in seen:
                continue
            seen.add((x, op, y))
            out.append((i, j, x, op, y, r))
    return out


def _moves(state: State) -> list[tuple[Step, State]]:
    """`_value_moves` with the expressions carried along: (step, child state)."""
    out: list[tuple[Step, State]] = []
    for i, j, x, op, y, r in _value_moves(tuple(v for v, _ in state)):
        step = Step(x, op, y, r)
        (a, ea), (b, eb) = state[i], state[j]
        ex, ey = (ea, eb) if a >= b else (eb, ea)
        rest = tuple(s for t, s in enumerate(state) if t != i and t != j)
        expr = f"{ex}{step.op}{ey}" if len(state) == 2 else f"({ex}{step.op}{ey})"
        out.append((step, rest + ((step.r, expr),)))
    return out


def _replay(numbers: list[int], order: tuple[int, ...]) -> "Path":
    state, steps = _initial(numbers), []
    for idx in order:
        step, state = _moves(state)[idx]
        steps.append(step)
    return Path(tuple(order), tuple(steps), state[0][0], state[0][1])


@dataclasses.dataclass(frozen=True)
class Path:
    order: tuple[int, ...]      # move index at each depth: the DFS enumeration order key
    steps: tuple[Step, ...]
    final: int
    expr: str                   # infix expression of the whole path

    @property
    def ops(self) -> str:
        return ",".join(map(str, self.steps))


def _initial(numbers: list[int]) -> State:
    return tuple((n, str(n)) for n in numbers)


def iter_paths(numbers: list[int]) -> Iterator[Path]:
    """Every complete path in DFS enumeration order (distinct operation sequences)."""
    def rec(state: State, order: tuple, steps: tuple) -> Iterator[Path]:
        if len(state) == 1:
            yield Path(order, steps, state[0][0], state[0][1])
            return
        for idx, (step, child) in enumerate(_moves(state)):
            yield from rec(child, order + (idx,), steps + (step,))
    if len(numbers) < 2:
        return iter(())
    return rec(_initial(numbers), (), ())


def random_path(numbers: list[int], rng: random.Random) -> Path:
    vals, order = tuple(numbers), []
    while len(vals) > 1:
        moves = _value_moves(vals)
        idx = rng.randrange(len(moves))
        i, j, *_, r = moves[idx]
        order.append(idx)
        vals = tuple(v for t, v in enumerate(vals) if t != i and t != j) + (r,)
    return _replay(numbers, tuple(order))


def solve(numbers: list[int], target: int, rng: random.Random | None = None,
          budget: int = SOLVE_BUDGET) -> Path | None:
    """A solution path (the first in DFS order, or in an rng-shuffled order), or None."""
    failed: set[tuple[int, ...]] = set()
    expansions = 0

    def rec(vals: tuple[int, ...], order: tuple[int, ...]) -> tuple[int, ...] | None:
        nonlocal expansions
        if len(vals) == 1:
            return order if vals[0] == target else None
        key = tuple(sorted(vals))
        if key in failed:
            return None
        expansions += 1
        if expansions > budget:
            raise TimeoutError
        moves = list(enumerate(_value_moves(vals)))
        if rng is not None:
            rng.shuffle(moves)
        last = len(vals) == 2
        for idx, (i, j, _x, _op, _y, r) in moves:
            if last:
                if r == target:
                    return order + (idx,)
                continue
            child = tuple(v for t, v in enumerate(vals) if t != i and t != j) + (r,)
            found = rec(child, order + (idx,))
            if found is not None:
                return found
        failed.add(key)
        return None

    if len(numbers) < 2:
        return None
    try:
        order = rec(tuple(numbers), ())
    except TimeoutError:
        return None
    return None if order is None else _replay(numbers, order)


# ---------------------------------------------------------------- rendering

def _fmt_list(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def render_compact(target: int, dead_ends: list[Path], solution: Path, answer: str) -> str:
    lines = [f"{p.ops}!={target}{COMPACT_BACKTRACK}" for p in dead_ends]
    lines.append(f"{solution.ops}=={target}")
    return "<think>" + "\n".join(lines) + "</think>\n<answer>" + answer + "</answer>"


def _shared(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the common prefix, leaving at least one move of `b` to explore."""
    n = 0
    while n < min(len(a), len(b) - 1) and a[n] == b[n]:
        n += 1
    return n


def render_paper(numbers: list[int], target: int, dead_ends: list[Path], solution: Path,
                 answer: str) -> str:
    out = ["<think>"]
    root = _initial(numbers)

    def state_line(state: State, ops: list[str]) -> str:
        return (f"Current State: {target}:{_fmt_list(v for v, _ in state)}, "
                f"Operations: {ops!r}")

    def node_id(order: tuple[int, ...]) -> str:
        return "#" + ",".join(["0", *map(str, order)])

    attempts = [*dead_ends, solution]
    for a, path in enumerate(attempts):
        # resume from the deepest node shared with the previous attempt
        common = _shared(attempts[a - 1].order, path.order) if a else 0
        state = root
        for d in range(common):
            state = _moves(state)[path.order[d]][1]
        ops = [str(s) for s in path.steps[:common]]
        out.append(state_line(state, ops))
        for d in range(common, len(path.order)):
            step, child = _moves(state)[path.order[d]]
            ops.append(str(step))
            out.append(f"Exploring Operation: {step}, Resulting Numbers: "
                       f"{_fmt_list(v for v, _ in child)}")
            state = child
            if len(state) == 1:
                verdict = "equal: Goal Reached" if step.r == target else "unequal: No Solution"
                out.append(f"{step.r},{target} {verdict}")
            else:
                nid = node_id(path.order[: d + 1])
                out.append(f"Generated Node {nid}: {target}:{_fmt_list(v for v, _ in state)} "
                           f"Operation: {step}")
                out.append(f"Moving to Node {nid}")
                out.append(state_line(state, ops))
        if a < len(attempts) - 1:
            back = node_id(path.order[: _shared(path.order, attempts[a + 1].order)])
            out.append(f"{PAPER_BACKTRACK} to Node {back}.")
    out.append("</think>")
    return "\n".join(out) + "\n<answer>" + answer + "</answer>"


# ---------------------------------------------------------------- the task

def _ground_truth(gt: Any) -> tuple[list[int], int]:
    if isinstance(gt, dict):
        numbers, target = gt.get("numbers"), gt.get("target")
        if (isinstance(numbers, list) and all(type(n) is int for n in numbers)
                and type(target) is int):
            return numbers, target
    raise TaskError(f"countdown: malformed ground truth {str(gt)[:200]!r}")


class CountdownTask(Task):
    name = "countdown"
    backtrack_sft = True

    # ---- problems
    def validate_params(self, params: dict[str, Any]) -> None:
        from reasoning_gym.games.countdown import CountdownConfig

        known = {f.name for f in dataclasses.fields(CountdownConfig)} - {"seed", "size"}
        for key in params:
            if key not in known:
                raise TaskError(f"countdown: unknown parameter {key!r} (known: {', '.join(sorted(known))})")
        for key, v in params.items():
            if key in ("operators", "shuffle"):
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise TaskError(f"countdown: parameter {key} must be an integer, got {v!r}")
        try:
            CountdownConfig(**params).validate()
        except AssertionError as e:
            raise TaskError(f"countdown: bad parameters {params}: {e}") from None

    def max_k(self, params: dict[str, Any]) -> int:
        """Every instance with n numbers has >= 3^(n-2) distinct dead ends: each state offers at
        least 3 distinct operations (+ - * on one pair) and at most 2 of the final operations of a
        path can hit the target; n = min_numbers."""
        self.validate_params(params)
        n = int(params.get("min_numbers", 4))
        return min(3 ** (n - 2), COUNT_CAP)

    def generate(self, size: int, seed: int, params: dict[str, Any]) -> list[Problem]:
        import reasoning_gym

        self.validate_params(params)
        if size <= 0:
            return []
        limit = 4 * size + 64
        ds = reasoning_gym.create_dataset("countdown", size=limit, seed=seed, **params)
        out: list[Problem] = []
        for idx in range(limit):
            try:
                item = ds[idx]
            except ValueError:    # reasoning-gym gave up on this index (targets out of reach)
                continue
            md = item["metadata"]
            numbers, target = [int(n) for n in md["numbers"]], int(md["target"])
            sol = solve(numbers, target)
            if sol is None:       # reachable only through negative/fractional intermediates
                continue
            out.append(Problem(
                question=f"Using the numbers {numbers}, create an equation that equals {target}.",
                answer=sol.expr,
                ground_truth={"numbers": numbers, "target": target},
                metadata={"source_dataset": "countdown", "source_index": idx, "seed": seed,
                          "numbers": numbers, "target": target, "expression": md["expression"],
                          "difficulty": md.get("difficulty")},
            ))
            if len(out) == size:
                return out
        raise TaskError(f"countdown: only {len(out)} of {size} problems could be generated and solved "
                        f"at params {params} (seed {seed})")

    def key(self, problem: Problem) -> str:
        numbers, target = _ground_truth(problem.ground_truth)
        return ",".join(map(str, sorted(numbers))) + f">{target}"

    def prompt(self, problem: Problem, template: str) -> list[dict[str, str]]:
        numbers, target = _ground_truth(problem.ground_truth)
        if template == "compact":
            return [{"role": "user", "content": " ".join(map(str, numbers)) + f">{target}\n"}]
        if template == "qwen-instruct":
            return [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": _task_text(numbers, target)}]
        if template == "base":
            return [{"role": "user", "content": f"{BASE_PREAMBLE}\nUser: {_task_text(numbers, target)}\n"
                                                "Assistant:"}]
        if template == "baseline":   # neutral wording, not tied to the trace format
            return [{"role": "user", "content": (
                f"Using all the numbers {numbers} exactly once, with +, -, * and /, write an "
                f"expression that equals {target}. Think in <think> </think> tags, then give only "
                "the expression in <answer> </answer> tags.")}]
        raise TaskError(f"countdown: unknown template {template!r}; known: {', '.join(TEMPLATES)}")

    # ---- traces
    def _candidates(self, numbers: list[int], target: int, k: int, rng: random.Random
                    ) -> tuple[list[Path], Path]:
        if len(numbers) <= EXHAUSTIVE_MAX_NUMBERS:
            paths = list(iter_paths(numbers))
            sols = [p for p in paths if p.final == target]
            dead = [p for p in paths if p.final != target]
            if not sols:
                raise TaskError(f"countdown: {numbers} -> {target} has no solution")
            if k > len(dead):
                raise TaskError(f"countdown: k={k} but {numbers} -> {target} has only "
                                f"{len(dead)} distinct dead ends")
            solution = rng.choice(sols)
            by_final: dict[int, list[Path]] = {}
            for p in dead:
                by_final.setdefault(p.final, []).append(p)
            finals = sorted(by_final)
            rng.shuffle(finals)
            chosen = [rng.choice(by_final[f]) for f in finals[:k]]
            if len(chosen) < k:
                taken = {p.order for p in chosen}
                rest = [p for p in dead if p.order not in taken]
                chosen += rng.sample(rest, k - len(chosen))
        else:
            solution = solve(numbers, target, rng=rng)
            if solution is None:
                raise TaskError(f"countdown: no solution found for {numbers} -> {target}")
            if k > self._count_dead_ends(numbers, target, cap=k):
                raise TaskError(f"countdown: k={k} exceeds the distinct dead ends of "
                                f"{numbers} -> {target}")
            seen: dict[tuple, Path] = {}
            finals: set[int] = set()
            spare: list[Path] = []
            for _ in range(200 + 50 * k):
                if len(seen) >= k:
                    break
                p = random_path(numbers, rng)
                if p.final == target or p.order in seen or any(p.order == q.order for q in spare):
                    continue
                if p.final in finals:
                    spare.append(p)
                    continue
                finals.add(p.final)
                seen[p.order] = p
            chosen = list(seen.values())
            for p in spare:
                if len(chosen) >= k:
                    break
                chosen.append(p)
            if len(chosen) < k:          # sampling fell short: take the first ones in DFS order
                taken = {p.order for p in chosen}
                for p in iter_paths(numbers):
                    if len(chosen) >= k:
                        break
                    if p.final != target and p.order not in taken:
                        chosen.append(p)
        chosen.sort(key=lambda p: p.order)
        return chosen, solution

    def trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise TaskError(f"countdown: k must be a non-negative integer, got {k!r}")
        if style not in STYLES:
            raise TaskError(f"countdown: unknown trace style {style!r}; known: {', '.join(STYLES)}")
        numbers, target = _ground_truth(problem.ground_truth)
        dead, solution = self._candidates(numbers, target, k, rng)
        answer = solution.expr
        if style == "compact":
            return render_compact(target, dead, solution, answer)
        return render_paper(numbers, target, dead, solution, answer)

    def _count_dead_ends(self, numbers: list[int], target: int, cap: int) -> int:
        n = 0
        for p in iter_paths(numbers):
            if p.final != target:
                n += 1
                if n >= cap:
                    break
        return n

    def max_backtracks(self, problem: Problem) -> int:
        """Distinct dead ends of the problem, counted up to COUNT_CAP."""
        numbers, target = _ground_truth(problem.ground_truth)
        return self._count_dead_ends(numbers, target, COUNT_CAP)

    # ---- reward
    def score(self, completion: str, ground_truth: dict[str, Any]) -> float:
        numbers, target = _ground_truth(ground_truth)
        return call_with_timeout(_score, completion, numbers, target, seconds=1.0, default=0.0)

    def count_backtracks(self, completion: str) -> int:
        # A compact dead end ends its line with `^`; a stray `^` in a sampled answer is not one.
        return count_markers(completion, COMPACT_BACKTRACK + "\n") + count_markers(completion, PAPER_BACKTRACK)


def _score(completion: Any, numbers: list[int], target: int) -> float:
    parts = split_think_answer(completion)
    if parts is None:
        return 0.0
    try:
        value, used = evaluate(parts[1].strip(" \t\n"))
    except ArithError:
        return 0.1
    if sorted(used) == sorted(numbers) and value == target:
        return 1.0
    return 0.1
