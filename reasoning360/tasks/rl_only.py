"""The RL-only tasks of the study: problems, prompts and exact verifiers, no backtrack traces.

color_cube_rotation (a colour), list_functions (a list of integers), zebra_puzzles (a name),
self_reference (a count), gsm_symbolic (a number). Each verifier compares one normalised value
exactly: 1.0 when equal, 0.1 for any other well-formed completion, 0.0 when the
``<think>...</think>\\n<answer>...</answer>`` format is broken.

Attempts (`attempt`: what the pretrained base writes, no search). These tasks have no traces,
so an attempt is a plausible answer drawn without solving, never derived from the reference
answer (the RL prompts a base is pretrained on must not hold their answers), with a verdict only
where one can be checked without solving:

* color_cube_rotation: a side drawn among the six; the answer is the colour it had at the start
  (``R=F`` : "the right side now shows what was at the front").
* list_functions: a generic list function drawn among those that apply (identity, reverse,
  sorts, length, sum, ...), checked on the examples as arc_1d checks a rule (``rev e1 e2!`` fails
  example 2), applied to the test input.
* zebra_puzzles: the names placed in the houses in a random order; the answer is the asked
  house's (``1=arnold 2=alice``).
* self_reference: a count drawn among 0..n for n statements (``solutions=2``).
* gsm_symbolic: two numbers of the question combined by one operation, computed right
  (``28*4=112``).
"""

from __future__ import annotations

import random
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from .base import Problem, TaskError
from .gym import COMPACT_FAILED, GymTask, digest, finish, finish_paper, gt_error
from .prompts import SYSTEM, SYSTEM_THINKS, Prompt, authors_prompt

MAX_LIST = 256


def _text_gt(name: str, gt: Any) -> str:
    if not isinstance(gt, dict) or not isinstance(gt.get("answer"), str) or not gt["answer"] \
            or len(gt["answer"]) > 1024:
        raise gt_error(name, gt)
    return gt["answer"]


def _words(text: str) -> str:
    """Lower case, surrounding quotes / final full stop dropped, inner spaces collapsed."""
    t = text.strip().strip("\"'`").strip()
    if t.endswith("."):
        t = t[:-1]
    return " ".join(t.lower().split())


def parse_number(text: str) -> Decimal | None:
    """A plain decimal (optional sign, digits with optional thousands commas, optional
    fraction); no exponents, no NaN/inf, at most 40 characters."""
    t = text.strip()
    if t.startswith("$"):
        t = t[1:]
    if not 0 < len(t) <= 40:
        return None
    body = t[1:] if t[0] in "+-" else t
    whole, dot, frac = body.partition(".")
    if "," in whole:
        groups = whole.split(",")
        if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
            return None
        whole = "".join(groups)
    if not whole or not all(c in "0123456789" for c in whole + frac) or (dot and not frac):
        return None
    try:
        return Decimal((t[0] if t[0] in "+-" else "") + whole + (("." + frac) if dot else ""))
    except InvalidOperation:
        return None


def parse_int_list(text: str) -> list[int] | None:
    t = text.strip()
    if not (t.startswith("[") and t.endswith("]")) or len(t) > 16 * MAX_LIST:
        return None
    inner = t[1:-1].strip()
    if not inner:
        return []
    out = []
    for part in inner.split(","):
        p = part.strip()
        digits = p[1:] if p[:1] == "-" else p
        if not 0 < len(digits) <= 18 or not all(c in "0123456789" for c in digits):
            return None
        out.append(int(p))
    return out if len(out) <= MAX_LIST else None


class _RLTask(GymTask):
    backtrack_sft = False

    def make_problem(self, item: dict, params: dict[str, Any]) -> Problem | None:
        gt = {"answer": str(item["answer"])}
        self.parse_gt(gt)
        if not self.is_correct(gt["answer"], gt):       # the reference answer must verify
            return None
        md = {k: v for k, v in item["metadata"].items() if k not in ("source_index",)}
        return Problem(question=item["question"], answer=gt["answer"], ground_truth=gt,
                       metadata={"difficulty": md.get("difficulty")})

    def key(self, problem: Problem) -> str:
        return digest(problem.question)

    def parse_gt(self, gt: Any) -> dict:
        _text_gt(self.name, gt)
        return gt

    def max_k(self, params: dict[str, Any]) -> int:
        self.validate_params(params)
        return 0


class ColorCubeRotationTask(_RLTask):
    name = "color_cube_rotation"
    dataset = "color_cube_rotation"
    ANSWER_EXAMPLE = "cyan"             # reasoning-gym/color_cube_rotation.py:31 of their fork

    def authors_prompt(self, problem: Problem, template: str) -> Prompt:
        """color_cube_rotation.py:25-42: its qwen-instruct system prompt says "thinks"."""
        return authors_prompt(
            template, self.question_text(problem), sep="\n", system=SYSTEM_THINKS, baseline_system=SYSTEM,
            think=("Show your work in <think> </think> tags, and return the answer in <answer> </answer>. "
                   "For example <answer> cyan </answer>."),
            plain="Return the answer in <answer> </answer>. For example <answer> cyan </answer>.")

    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """A side drawn among the six: the asked side is said to show the colour that side had
        before the rotations."""
        sides, _, target = _cube(problem.question)
        colour, side = rng.choice(sides)
        if style == "compact":
            return finish(f"{CUBE_CODE[target]}={CUBE_CODE[side]}", colour)
        return finish_paper(f"Let's say the {target} side now shows the colour that was on the {side} side "
                            f"at the start, which is {colour}.\n", colour)

    def compact_prompt(self, problem: Problem) -> str:
        q = problem.question
        sides = re.findall(r"- a (\w+) (\w+) side", q)
        rot = re.findall(r"side which was before at the (\w+) is now at the top", q)
        target = re.search(r"color of the (\w+) side", q)
        if not sides or not target:
            return super().compact_prompt(problem)
        code = {"top": "U", "bottom": "D", "front": "F", "back": "B", "left": "L", "right": "R"}
        if any(side not in code for _, side in sides) or any(r not in code for r in rot) \
                or target.group(1) not in code:
            return super().compact_prompt(problem)
        return (" ".join(f"{code[side]}={colour}" for colour, side in sides) + " rot="
                + ",".join(code[r] for r in rot) + f" {code[target.group(1)]}?\n")

    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        return len(answer) <= 64 and _words(answer) == _words(gt["answer"])


CUBE_CODE = {"top": "U", "bottom": "D", "front": "F", "back": "B", "left": "L", "right": "R"}


def _cube(question: str) -> tuple[list[tuple[str, str]], list[str], str]:
    """(colour, side) of the six sides, the rotations (sides brought to the top), the asked side."""
    sides = re.findall(r"- a (\w+) (\w+) side", question)
    rot = re.findall(r"side which was before at the (\w+) is now at the top", question)
    target = re.search(r"color of the (\w+) side", question)
    if len(sides) != 6 or not target or any(s not in CUBE_CODE for _, s in sides) \
            or target.group(1) not in CUBE_CODE:
        raise TaskError(f"color_cube_rotation: cannot read the cube of {question[:200]!r}")
    return sides, rot, target.group(1)


class ZebraPuzzlesTask(_RLTask):
    name = "zebra_puzzles"
    dataset = "zebra_puzzles"
    ANSWER_EXAMPLE = "alice"

    def compact_prompt(self, problem: Problem) -> str:
        """The clues and the question, without the fixed preamble."""
        q = problem.question
        head, sep, rest = q.partition("characteristics:\n")
        return (rest if sep else q).encode("ascii", "replace").decode() + "\n"

    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """The names placed in the houses in a random order (no clue read); the answer is the
        name placed in the asked house."""
        names = re.search(r"Each person has a unique name: ([^\n]+)", problem.question)
        house = re.search(r"lives in House (\d+)\?", problem.question)
        people = [x.strip() for x in names.group(1).split(",")] if names else []
        if not people or not house or not 1 <= int(house.group(1)) <= len(people):
            raise TaskError(f"zebra_puzzles: cannot read the names and the asked house of "
                            f"{problem.question[:200]!r}")
        order = rng.sample(people, len(people))
        answer = order[int(house.group(1)) - 1]
        if style == "compact":
            return finish(" ".join(f"{i}={nm}" for i, nm in enumerate(order, 1)), answer)
        placed = ", ".join(f"House {i} is {nm}" for i, nm in enumerate(order, 1))
        return finish_paper(f"Let's place the people: {placed}. So House {house.group(1)} is {answer}.\n", answer)

    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        return len(answer) <= 128 and _words(answer) == _words(gt["answer"])


class SelfReferenceTask(_RLTask):
    name = "self_reference"
    dataset = "self_reference"
    ANSWER_EXAMPLE = "5"                # reasoning-gym/self_reference.py:31 of their fork

    def compact_prompt(self, problem: Problem) -> str:
        """The statements, without the fixed preamble."""
        q = problem.question
        head, sep, rest = q.partition("number of possible solutions:")
        return (rest.strip("\n ") if sep else q).encode("ascii", "replace").decode() + "\n"

    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """A count drawn among 0..n for the question's n statements (a solution is an assignment
        of true and false to them; one count per number of true statements is possible)."""
        n = len(re.findall(r"Statement \d+:", problem.question))
        if n == 0:
            raise TaskError(f"self_reference: no statements in {problem.question[:200]!r}")
        count = rng.randint(0, n)
        if style == "compact":
            return finish(f"solutions={count}", str(count))
        return finish_paper(f"There are {n} statements. Let's say {count} assignments of true and false "
                            "are consistent with them.\n", str(count))

    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        want, got = parse_number(gt["answer"]), parse_number(answer)
        return want is not None and got is not None and got == want


class GSMSymbolicTask(_RLTask):
    name = "gsm_symbolic"
    dataset = "gsm_symbolic"
    ANSWER_EXAMPLE = "42"

    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """Two numbers of the question (in the order drawn) combined by an operation drawn among
        + - * and exact /, computed right; a question with one number answers it."""
        numbers = [int(x) for x in re.findall(r"\d+", problem.question)][:64]
        if not numbers:
            raise TaskError(f"gsm_symbolic: no number in {problem.question[:200]!r}")
        if len(numbers) == 1:
            x, op, y, r = numbers[0], "", None, numbers[0]
        else:
            i, j = rng.sample(range(len(numbers)), 2)
            x, y = numbers[i], numbers[j]
            ops = "+-*" + ("/" if y and x % y == 0 else "")
            op = rng.choice(ops)
            r = x + y if op == "+" else x - y if op == "-" else x * y if op == "*" else x // y
        if style == "compact":
            return finish(f"{x}{op}{y}={r}" if op else str(r), str(r))
        said = f"{x} {op} {y} = {r}" if op else f"the number is {r}"
        return finish_paper(f"Let's compute {said}.\n", str(r))

    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        want, got = parse_number(gt["answer"]), parse_number(answer)
        return want is not None and got is not None and got == want


class ListFunctionsTask(_RLTask):
    name = "list_functions"
    dataset = "list_functions"
    ANSWER_EXAMPLE = "[1, 2, 3]"
    SEED_GLOBAL_RANDOM = True          # reasoning-gym 0.1.25's generate_* call random.randint

    def compact_prompt(self, problem: Problem) -> str:
        q = problem.question
        pairs = re.findall(r"Input \d+: \[([^\]]*)\]\nOutput \d+: \[([^\]]*)\]", q)
        test = re.search(r"\n\nInput: \[([^\]]*)\]", q)
        if not pairs or not test:
            return super().compact_prompt(problem)

        def row(s: str) -> str:
            return " ".join(x.strip() for x in s.split(",") if x.strip())
        return "\n".join([f"{row(i)}>{row(o)}" for i, o in pairs] + [f"{row(test.group(1))}>"]) + "\n"

    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """A function drawn among LIST_RULES that apply to every example and to the test input,
        checked on the examples up to the first it gets wrong (`!`), applied to the test input."""
        examples, test = _list_examples(problem.question)
        names = [nm for nm, f in LIST_RULES.items()
                 if all(f(i) is not None for i, _ in examples) and f(test) is not None]
        rule = rng.choice(names)
        f = LIST_RULES[rule]
        bad = next((e for e, (i, o) in enumerate(examples) if f(i) != o), None)
        answer = "[" + ", ".join(map(str, f(test))) + "]"
        if style == "compact":
            shown = len(examples) if bad is None else bad + 1
            checks = "".join(f" e{e + 1}" for e in range(shown))
            return finish(rule + checks + (" ok" if bad is None else COMPACT_FAILED), answer)
        verdict = ("It gives every example's output." if bad is None else
                   f"It does not give the output of example {bad + 1}, but let's apply it to the test input anyway.")
        return finish_paper(f"Let's try the rule: {LIST_WORDS[rule]}. {verdict}\n", answer)

    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        want, got = parse_int_list(gt["answer"]), parse_int_list(answer)
        return want is not None and got == want


def _some(f: Callable[[list[int]], list[int]]) -> Callable[[list[int]], list[int] | None]:
    """A function of non-empty lists (None on an empty one)."""
    return lambda xs: f(xs) if xs else None


# Generic list functions an attempt draws from (name -> function), and their words (paper).
LIST_RULES: dict[str, Callable[[list[int]], list[int] | None]] = {
    "id": lambda xs: list(xs),
    "rev": lambda xs: xs[::-1],
    "sort": sorted,
    "rsort": lambda xs: sorted(xs, reverse=True),
    "len": lambda xs: [len(xs)],
    "sum": lambda xs: [sum(xs)],
    "max": _some(lambda xs: [max(xs)]),
    "min": _some(lambda xs: [min(xs)]),
    "first": _some(lambda xs: xs[:1]),
    "last": _some(lambda xs: xs[-1:]),
    "tail": _some(lambda xs: xs[1:]),
    "init": _some(lambda xs: xs[:-1]),
    "uniq": lambda xs: list(dict.fromkeys(xs)),
}
LIST_WORDS = {"id": "the output is the input", "rev": "reverse the list", "sort": "sort the list ascending",
              "rsort": "sort the list descending", "len": "count the elements", "sum": "add up the elements",
              "max": "keep the largest element", "min": "keep the smallest element",
              "first": "keep the first element", "last": "keep the last element",
              "tail": "drop the first element", "init": "drop the last element",
              "uniq": "drop repeated elements"}


def _list_examples(question: str) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """The (input, output) examples and the test input of a list_functions question."""
    pairs = re.findall(r"Input \d+: (\[[^\]]*\])\nOutput \d+: (\[[^\]]*\])", question)
    test = re.search(r"\n\nInput: (\[[^\]]*\])", question)
    examples = [(parse_int_list(i), parse_int_list(o)) for i, o in pairs]
    got = parse_int_list(test.group(1)) if test else None
    if not examples or got is None or any(i is None or o is None for i, o in examples):
        raise TaskError(f"list_functions: cannot read the examples of {question[:200]!r}")
    return examples, got
