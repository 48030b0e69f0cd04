"""Countdown: combine the given numbers with + - * / into the target, each number used once.

Problems come from two sets. `reasoning_gym`: reasoning-gym's `countdown` generator, what the
authors' SFT problems are (reasoning-gym/countdown.py, gen_test.sh: --sft_size=76800, 4-6
numbers in 1-100, targets 100-999). `tinyzero`: TinyZero's 3-4-number tasks, which their RL and
test runs read ("cd-tz" in their logs; their countdown reward needs TinyZero's
{"target", "numbers"} ground truth: verl/utils/reward_score/countdown.py:96-97), regenerated here
with the Stream-of-Search distribution that produced that set (3 or 4 numbers in 1-99, a target in
10-100, resampled until solvable), because the published set is a hub download. Which set the RL
and test splits draw is `rl_problem_set`; the SFT split always draws reasoning_gym.

Traces come from a search program: a move picks two numbers x >= y of the current list and
replaces them by x+y, x-y, x*y or x/y (exact division), so every intermediate is a non-negative
integer; a complete path (one number left) that differs from the target is a dead end. A
k-backtrack trace shows k distinct dead ends, then the solution path and its answer.

* ``compact`` (the tiny character model): dead ends in DFS order, each stating its result::

    <think>12+7=19,19-3=16!=22^
    12+3=15,15+7=22==22</think>
    <answer>(12+3)+7</answer>

* ``paper`` (the authors' wording and structure, create_backtrack_datasets.py:50-80 of their
  fork): a dead end continues a correct prefix of the solution with wrong steps, dead ends in
  order of the step where they leave the solution::

    <think>Step 1: 12 + 7 = 19. Step 2: 19 - 3 = 16. Wait, this doesn't lead to the correct
    solution. Let me restart.
    Step 1: 12 + 3 = 15. Step 2: 15 * 7 = 105. Wait, this doesn't lead to the correct solution.
    105 is not the correct answer. Let me go back to step 1 and keep thinking from there.
    Step 2: 15 + 7 = 22. This matches the problem statement. This is the solution.
    </think>

    <answer>(12 + 3) + 7</answer>

  Theirs mutate one solution chain and may repeat a dead end or end it on the target; here
  every dead end is a distinct path that misses the target, chosen by a seeded rng.

An attempt (`attempt`: what the pretrained base writes, no search) is one random complete path
(a random pair and operation at each step, every step computed right), stated with its check
and answered whether or not it reaches the target::

    <think>12+7=19,19-3=16!=22</think>
    <answer>(12+7)-3</answer>

  (`paper`: its steps, then "This matches the problem statement. This is the solution." or
  "16 is not 22. This does not match the problem statement.")
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Any, Iterator

from .answer import MAX_ANSWER_CHARS, call_with_timeout, count_markers, extract_answer
from .arith import ArithError, evaluate
from .base import Problem, Task, TaskError
from .prompts import PREFILL, SYSTEM_THINKS, Prompt, authors_prompt, base, chatml, compact

OPS = "+-*/"
COMPACT_BACKTRACK = "^"
PAPER_BACKTRACK = "Wait, this doesn't lead to the correct solution."
STYLES = ("compact", "paper")
PROBLEM_SETS = ("reasoning_gym", "tinyzero")
TINYZERO_KEYS = ("min_numbers", "max_numbers", "min_value", "max_value", "min_target", "max_target")
OWN_PARAMS = ("rl_problem_set", "tinyzero", "problem_set")   # problem_set: set by split_params

EXHAUSTIVE_MAX_NUMBERS = 4     # up to 4 numbers (<= 1,152 paths) every path is enumerated
COUNT_CAP = 10_000             # max_backtracks stops counting here
SOLVE_BUDGET = 200_000         # node expansions for the solution search on big instances
TINYZERO_TRIES = 1000          # number draws per tinyzero item before the item is skipped

# The question of the authors' reasoning-gym fork (reasoning_gym/games/countdown.py:11-18, 55-59):
# one of three wordings, then the format instructions.
RG_QUESTIONS = (
    "Using the numbers {numbers}, create an expression that equals {target}.\nYou can only use each number once.",
    "Find a way to make {target} using some or all of these numbers: {numbers}.\nEach number can only be used once.",
    "Calculate {target} using the numbers {numbers}.\nEach number may be used at most once.",
)
RG_FORMAT = ("{question}\nFinal answer format instructions:\n1. Provide your solution as a arithmetic "
             "expression (no '=' sign).\n2. Do not include the target number in the expression.\n"
             "3. Use '*' for multiplication.\n4. Use '/' for division.\n5. Do not include any other "
             "text or formatting.\n")
# reasoning-gym/countdown.py:30,36,40 (qwen-instruct / base / baseline) and TinyZero's
# examples/data_preprocess/countdown.py:60,65.
THINK = ("Show your work in <think> </think> tags. And return the final answer in <answer> </answer> "
         "tags, for example <answer> (1 + 2) / 3 </answer>.")
PLAIN = "Return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."


def rg_question(numbers: list[int], target: int, rng: random.Random) -> str:
    q = rng.choice(RG_QUESTIONS).format(numbers=", ".join(map(str, numbers)), target=target)
    return RG_FORMAT.format(question=q)


def tinyzero_question(numbers: list[int], target: int) -> str:
    return (f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
            "arithmetic operations (+, -, *, /) and each number can only be used once.")


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

def render_compact(target: int, dead_ends: list[Path], solution: Path, answer: str) -> str:
    lines = [f"{p.ops}!={target}{COMPACT_BACKTRACK}" for p in dead_ends]
    lines.append(f"{solution.ops}=={target}")
    return "<think>" + "\n".join(lines) + "</think>\n<answer>" + answer + "</answer>"


def render_attempt_compact(target: int, path: Path) -> str:
    """One path with its check and its own answer: a k=0 trace's line when it hits the target,
    a dead end's line without the backtrack when it does not."""
    check = "==" if path.final == target else "!="
    return f"<think>{path.ops}{check}{target}</think>\n<answer>{path.expr}</answer>"


def render_attempt_paper(target: int, path: Path) -> str:
    steps = "".join(f"Step {i + 1}: {step_text(s)}. " for i, s in enumerate(path.steps))
    verdict = ("This matches the problem statement. This is the solution." if path.final == target
               else f"{path.final} is not {target}. This does not match the problem statement.")
    return f"<think>{steps}{verdict}\n</think>\n\n<answer>{spaced(path.expr)}</answer>"


def _common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the common prefix of two move sequences."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def step_text(step: Step) -> str:
    """One step as the authors write it (reasoning_gym/games/countdown.py:159 of their fork)."""
    return f"{step.x} {step.op} {step.y} = {step.r}"


def spaced(expr: str) -> str:
    """An answer expression with spaces around the operators, as their combined_solution."""
    return "".join(f" {c} " if c in OPS else c for c in expr)


def render_paper(target: int, dead_ends: list[tuple[int, Path]], solution: Path, answer: str) -> str:
    """The authors' trace (create_backtrack_datasets.py:50-80): dead ends (depth, path) sorted by
    the step where they leave the solution; the correct steps up to there are written once."""
    sol = [step_text(s) for s in solution.steps]
    out: list[str] = []
    cur = 0
    for depth, path in dead_ends:
        for i in range(cur, depth):
            out.append(f"Step {i + 1}: {sol[i]}. ")
        cur = max(cur, depth)
        for j in range(depth, len(path.steps)):
            out.append(f"Step {j + 1}: {step_text(path.steps[j])}. ")
        if cur == 0:
            out.append(f"{PAPER_BACKTRACK} Let me restart.\n")
        else:
            out.append(f"{PAPER_BACKTRACK} {path.final} is not the correct answer. Let me go back to "
                       f"step {cur} and keep thinking from there.\n")
    for i in range(cur, len(sol)):
        out.append(f"Step {i + 1}: {sol[i]}. ")
    out.append("This matches the problem statement. This is the solution.\n</think>\n\n<answer>"
               + answer + "</answer>")
    return "<think>" + "".join(out)


def _complete(numbers: list[int], order: tuple[int, ...], rng: random.Random) -> Path:
    """`order` continued with random moves to a complete path."""
    vals, out = tuple(numbers), list(order)
    for idx in order:
        i, j, *_, r = _value_moves(vals)[idx]
        vals = tuple(v for t, v in enumerate(vals) if t != i and t != j) + (r,)
    while len(vals) > 1:
        moves = _value_moves(vals)
        idx = rng.randrange(len(moves))
        i, j, *_, r = moves[idx]
        out.append(idx)
        vals = tuple(v for t, v in enumerate(vals) if t != i and t != j) + (r,)
    return _replay(numbers, tuple(out))


def paper_dead_ends(numbers: list[int], target: int, solution: Path, k: int,
                    rng: random.Random) -> list[tuple[int, Path]]:
    """k distinct dead ends as (depth, path): the path follows the solution for `depth` steps and
    leaves it at the next. Like the authors' generator, a depth is drawn uniformly first
    (start_step = randint(0, steps - 1): reasoning_gym/games/countdown.py:331), then a path."""
    m = len(solution.order)
    chosen: list[tuple[int, Path]] = []
    if len(numbers) <= EXHAUSTIVE_MAX_NUMBERS:
        pools: dict[int, list[Path]] = {}
        for p in iter_paths(numbers):
            if p.final != target:
                pools.setdefault(_common(p.order, solution.order), []).append(p)
        if k > sum(len(v) for v in pools.values()):
            raise TaskError(f"countdown: k={k} but {numbers} -> {target} has only "
                            f"{sum(len(v) for v in pools.values())} distinct dead ends")
        for _ in range(k):
            depth = rng.choice(sorted(d for d, v in pools.items() if v))
            chosen.append((depth, pools[depth].pop(rng.randrange(len(pools[depth])))))
    else:
        seen: set[tuple[int, ...]] = set()
        for _ in range(200 + 50 * k):
            if len(chosen) >= k:
                break
            depth = rng.randrange(m)
            vals = tuple(numbers)
            for idx in solution.order[:depth]:
                i, j, *_, r = _value_moves(vals)[idx]
                vals = tuple(v for t, v in enumerate(vals) if t != i and t != j) + (r,)
            others = [i for i in range(len(_value_moves(vals))) if i != solution.order[depth]]
            p = _complete(numbers, solution.order[:depth] + (rng.choice(others),), rng)
            if p.final == target or p.order in seen:
                continue
            seen.add(p.order)
            chosen.append((depth, p))
        if len(chosen) < k:            # sampling fell short: the first ones in DFS order
            for p in iter_paths(numbers):
                if len(chosen) >= k:
                    break
                if p.final != target and p.order not in seen:
                    seen.add(p.order)
                    chosen.append((_common(p.order, solution.order), p))
        if len(chosen) < k:
            raise TaskError(f"countdown: k={k} exceeds the distinct dead ends of {numbers} -> {target}")
    chosen.sort(key=lambda t: t[0])       # stable: equal depths keep their drawn order
    return chosen


# ---------------------------------------------------------------- the task

def _ground_truth(gt: Any) -> tuple[list[int], int]:
    if isinstance(gt, dict):
        numbers, target = gt.get("numbers"), gt.get("target")
        if (isinstance(numbers, list) and all(type(n) is int for n in numbers)
                and type(target) is int):
            return numbers, target
    raise TaskError(f"countdown: malformed ground truth {str(gt)[:200]!r}")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CountdownTask(Task):
    name = "countdown"
    backtrack_sft = True
    PAPER_MARKERS = (PAPER_BACKTRACK,)           # one per dead end of a paper trace

    # ---- problems
    def validate_params(self, params: dict[str, Any]) -> None:
        from reasoning_gym.games.countdown import CountdownConfig

        if not isinstance(params, dict):
            raise TaskError(f"countdown: params must be a mapping, got {params!r}")
        known = ({f.name for f in dataclasses.fields(CountdownConfig)} - {"seed", "size"}) | set(OWN_PARAMS)
        for key in params:
            if key not in known:
                raise TaskError(f"countdown: unknown parameter {key!r} (known: {', '.join(sorted(known))})")
        for key in ("rl_problem_set", "problem_set"):
            if key in params and params[key] not in PROBLEM_SETS:
                raise TaskError(f"countdown: parameter {key} must be one of {', '.join(PROBLEM_SETS)}, "
                                f"got {params[key]!r}")
        if params.get("rl_problem_set") == "tinyzero" or params.get("problem_set") == "tinyzero":
            tz = params.get("tinyzero")
            if not isinstance(tz, dict) or set(tz) != set(TINYZERO_KEYS) or not all(_int(v) for v in tz.values()):
                raise TaskError(f"countdown: parameter tinyzero must map {', '.join(TINYZERO_KEYS)} to "
                                f"integers (the tinyzero problem set), got {tz!r}")
            if not (2 <= tz["min_numbers"] <= tz["max_numbers"] <= EXHAUSTIVE_MAX_NUMBERS
                    and 1 <= tz["min_value"] <= tz["max_value"] and 1 <= tz["min_target"] <= tz["max_target"]):
                raise TaskError(f"countdown: parameter tinyzero needs 2 <= min_numbers <= max_numbers <= "
                                f"{EXHAUSTIVE_MAX_NUMBERS} and min <= max, got {tz}")
        rg = {k: v for k, v in params.items() if k not in OWN_PARAMS}
        for key, v in rg.items():
            if key in ("operators", "shuffle"):
                continue
            if not _int(v):
                raise TaskError(f"countdown: parameter {key} must be an integer, got {v!r}")
        try:
            CountdownConfig(**rg).validate()
        except AssertionError as e:
            raise TaskError(f"countdown: bad parameters {params}: {e}") from None

    def split_params(self, params: dict[str, Any], split: str) -> dict[str, Any]:
        """The SFT split draws reasoning-gym problems (the authors' SFT set); the RL and test
        splits draw `rl_problem_set`."""
        pset = "reasoning_gym" if split == "sft" else params.get("rl_problem_set", "reasoning_gym")
        return {**params, "problem_set": pset}

    def max_k(self, params: dict[str, Any]) -> int:
        """Every instance with n numbers has >= 3^(n-2) distinct dead ends: each state offers at
        least 3 distinct operations (+ - * on one pair) and at most 2 of the final operations of a
        path can hit the target; n = min_numbers of the SFT (reasoning-gym) problems."""
        self.validate_params(params)
        n = int(params.get("min_numbers", 4))
        return min(3 ** (n - 2), COUNT_CAP)

    def generate(self, size: int, seed: int, params: dict[str, Any]) -> list[Problem]:
        self.validate_params(params)
        if size <= 0:
            return []
        if params.get("problem_set", "reasoning_gym") == "tinyzero":
            return self._generate_tinyzero(size, seed, params["tinyzero"])
        import reasoning_gym

        rg = {k: v for k, v in params.items() if k not in OWN_PARAMS}
        limit = 4 * size + 64
        ds = reasoning_gym.create_dataset("countdown", size=limit, seed=seed, **rg)
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
                question=rg_question(numbers, target, random.Random(f"countdown-question:{seed}:{idx}")),
                answer=sol.expr,
                ground_truth={"numbers": numbers, "target": target},
                metadata={"source_dataset": "countdown", "problem_set": "reasoning_gym",
                          "source_index": idx, "seed": seed, "numbers": numbers, "target": target,
                          "expression": md["expression"], "difficulty": md.get("difficulty")},
            ))
            if len(out) == size:
                return out
        raise TaskError(f"countdown: only {len(out)} of {size} problems could be generated and solved "
                        f"at params {params} (seed {seed})")

    def _generate_tinyzero(self, size: int, seed: int, tz: dict[str, int]) -> list[Problem]:
        """The Stream-of-Search distribution of TinyZero's Countdown-Tasks-3to4 (their
        src/countdown_generate.py: start size and target drawn first, numbers redrawn until the
        target is reachable), seeded per item."""
        out: list[Problem] = []
        limit = 4 * size + 64
        for idx in range(limit):
            rng = random.Random(f"countdown-tinyzero:{seed}:{idx}")
            n = rng.randint(tz["min_numbers"], tz["max_numbers"])
            target = rng.randint(tz["min_target"], tz["max_target"])
            for _ in range(TINYZERO_TRIES):
                numbers = [rng.randint(tz["min_value"], tz["max_value"]) for _ in range(n)]
                sol = solve(numbers, target)
                if sol is not None:
                    break
            else:
                continue
            out.append(Problem(
                question=tinyzero_question(numbers, target), answer=sol.expr,
                ground_truth={"numbers": numbers, "target": target},
                metadata={"source_dataset": "countdown-tinyzero", "problem_set": "tinyzero",
                          "source_index": idx, "seed": seed, "numbers": numbers, "target": target}))
            if len(out) == size:
                return out
        raise TaskError(f"countdown: only {len(out)} of {size} tinyzero problems at {tz} (seed {seed})")

    def key(self, problem: Problem) -> str:
        numbers, target = _ground_truth(problem.ground_truth)
        return ",".join(map(str, sorted(numbers))) + f">{target}"

    def prompt(self, problem: Problem, template: str) -> Prompt:
        numbers, target = _ground_truth(problem.ground_truth)
        if template == "compact":
            return compact(" ".join(map(str, numbers)) + f">{target}\n")
        if problem.metadata.get("problem_set") == "tinyzero":
            # TinyZero's make_prefix (examples/data_preprocess/countdown.py:57-66); it has no
            # `baseline`: ours drops the think instruction as the authors' other baselines do.
            q = tinyzero_question(numbers, target)
            if template == "qwen-instruct":
                return chatml(SYSTEM_THINKS, f" {q} {THINK}", PREFILL)
            if template == "baseline":
                return chatml(SYSTEM_THINKS, f" {q} {PLAIN}", PREFILL)
            if template == "base":
                return base(f"User: {q} {THINK}", PREFILL)
        # reasoning-gym/countdown.py:25-41 (the question ends with a newline: no separator)
        return authors_prompt(template, problem.question, think=THINK, plain=PLAIN, sep="", base_sep=" ")

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
        if style == "compact":
            dead, solution = self._candidates(numbers, target, k, rng)
            return render_compact(target, dead, solution, solution.expr)
        solution = self._solution(numbers, target, rng)
        dead_ends = paper_dead_ends(numbers, target, solution, k, rng)
        return render_paper(target, dead_ends, solution, spaced(solution.expr))

    def attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """A random complete path (`random_path`: each step a pair and an operation drawn
        uniformly among the distinct moves), checked against the target, answered as is."""
        if style not in STYLES:
            raise TaskError(f"countdown: unknown trace style {style!r}; known: {', '.join(STYLES)}")
        numbers, target = _ground_truth(problem.ground_truth)
        if len(numbers) < 2:
            raise TaskError(f"countdown: an attempt needs at least 2 numbers, got {numbers}")
        path = random_path(numbers, rng)
        return render_attempt_compact(target, path) if style == "compact" else render_attempt_paper(target, path)

    def _solution(self, numbers: list[int], target: int, rng: random.Random) -> Path:
        if len(numbers) <= EXHAUSTIVE_MAX_NUMBERS:
            sols = [p for p in iter_paths(numbers) if p.final == target]
            if sols:
                return rng.choice(sols)
        else:
            sol = solve(numbers, target, rng=rng)
            if sol is not None:
                return sol
        raise TaskError(f"countdown: {numbers} -> {target} has no solution")

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
    def score(self, completion: str, ground_truth: dict[str, Any], prefill: str = "") -> float:
        numbers, target = _ground_truth(ground_truth)
        return call_with_timeout(_score, completion, numbers, target, prefill, seconds=1.0, default=0.0)

    def count_backtracks(self, completion: str) -> int:
        """Compact dead ends end their line with `^` (a stray `^` in an answer is not one);
        paper dead ends say "Wait, this doesn't lead to the correct solution." once each."""
        return count_markers(completion, COMPACT_BACKTRACK + "\n") + count_markers(completion, PAPER_BACKTRACK)


def _score(completion: Any, numbers: list[int], target: int, prefill: str = "") -> float:
    """The authors' countdown check (verl/utils/reward_score/countdown.py:86-138): the answer must
    use exactly the given numbers and reach the target; parsed here, never evaluated."""
    answer = extract_answer(completion, prefill)
    if answer is None:
        return 0.0
    if len(answer) > MAX_ANSWER_CHARS:
        return 0.1
    try:
        value, used = evaluate(answer)
    except ArithError:
        return 0.1
    if sorted(used) == sorted(numbers) and value == target:
        return 1.0
    return 0.1
