"""The RL-only tasks of the study: problems, prompts and exact verifiers, no backtrack traces.

color_cube_rotation (a colour), list_functions (a list of integers), zebra_puzzles (a name),
self_reference (a count), gsm_symbolic (a number). Each verifier compares one normalised value
exactly: 1.0 when equal, 0.1 for any other well-formed completion, 0.0 when the
``<think>...</think>\\n<answer>...</answer>`` format is broken.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .base import Problem
from .gym import GymTask, digest, gt_error
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


class ZebraPuzzlesTask(_RLTask):
    name = "zebra_puzzles"
    dataset = "zebra_puzzles"
    ANSWER_EXAMPLE = "alice"

    def compact_prompt(self, problem: Problem) -> str:
        """The clues and the question, without the fixed preamble."""
        q = problem.question
        head, sep, rest = q.partition("characteristics:\n")
        return (rest if sep else q).encode("ascii", "replace").decode() + "\n"

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

    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        want, got = parse_number(gt["answer"]), parse_number(answer)
        return want is not None and got is not None and got == want


class GSMSymbolicTask(_RLTask):
    name = "gsm_symbolic"
    dataset = "gsm_symbolic"
    ANSWER_EXAMPLE = "42"

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

    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        want, got = parse_int_list(gt["answer"]), parse_int_list(answer)
        return want is not None and got == want
