"""Knights and knaves: assume-and-check traces (both styles), max_k = 2^n - 1, exact reward."""

from __future__ import annotations

import itertools
import random
import re

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, count_backtracks, get_task, score, validate_point
from reasoning360.tasks.gym import COMPACT_BACKTRACK
from reasoning360.tasks.knights_knaves import PAPER_MARKER
from reasoning360.tasks.knights_knaves import consistent, evaluate, letter

CFG = yaml.safe_load((CONFIGS / "task" / "knights_knaves.yaml").read_text())
CPU = CFG["params"]["cpu"]
task = get_task("knights_knaves")
PROBLEMS = task.generate(40, 11, CPU)


def _split(trace: str) -> tuple[str, str]:
    m = re.fullmatch(r"<think>(.*)</think>\n<answer>(.*)</answer>", trace, re.S)
    assert m, trace
    return m[1], m[2]


def _compact_dead_ends(trace: str, gt: dict) -> list[tuple[bool, ...]]:
    """Every dead end: an assignment, its statements' values up to the first contradiction."""
    think, answer = _split(trace)
    st_, sol = gt["statements"], tuple(gt["solution"])
    lines = think.split("\n")
    dead = []
    for line in lines[:-1]:
        assert line.endswith(COMPACT_BACKTRACK), line
        code, *checks = line[:-1].split(" ")
        a = tuple(c == "K" for c in code)
        for j, chk in enumerate(checks):
            assert chk == f"{letter(j)}:{'T' if evaluate(st_[j], a) else 'F'}"
        # WHY: the last checked statement contradicts its speaker, the earlier ones do not
        assert consistent(st_, a) == len(checks) - 1
        dead.append(a)
    code, *checks = lines[-1].split(" ")
    assert tuple(c == "K" for c in code) == sol and len(checks) == len(sol)
    assert answer == code
    return dead


def _paper_dead_ends(trace: str, gt: dict) -> list[str]:
    """Our wording (knights_knaves is not one of the authors' tasks), in their structure: one line
    per assumption; a dead end stops at the first contradicted statement and goes back."""
    m = re.fullmatch(r"<think>(.*)\n</think>\n\n<answer>(.*)</answer>", trace, re.S)
    assert m, trace[-200:]
    lines = m[1].split("\n")
    out = []
    for line in lines[:-1]:
        assert line.startswith("Let's assume ") and line.count(PAPER_MARKER) == 1
        assert line.endswith(". Let me go back and try another assignment.")
        out.append(line.split(".")[0])
    assert lines[-1].startswith("Let's assume ") and PAPER_MARKER not in lines[-1]
    assert lines[-1].endswith("Every statement is consistent with this assignment. This is the solution.")
    assert m[2] == task.natural_answer(gt, tuple(gt["solution"]))
    return out


@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(PROBLEMS) - 1), k=st.integers(0, 7), seed=st.integers(0, 2**32),
       style=st.sampled_from(["compact", "paper"]))
def test_trace_k_distinct_dead_ends_and_a_correct_answer(i, k, seed, style):
    p = PROBLEMS[i]
    trace = task.trace(p, k, style, random.Random(seed))
    assert count_backtracks("knights_knaves", trace) == k
    assert score("knights_knaves", trace, p.ground_truth) == 1.0
    dead = _compact_dead_ends(trace, p.ground_truth) if style == "compact" else _paper_dead_ends(trace, p.ground_truth)
    assert len(dead) == k and len(set(dead)) == k
    if style == "compact":
        assert trace.isascii()
    assert task.trace(p, k, style, random.Random(seed)) == trace


def test_max_k_is_exact_and_k_too_large_raises():
    assert task.max_k(CPU) == 7
    assert task.max_k({**CPU, "n_people": 4}) == 15
    p = PROBLEMS[0]
    assert task.max_backtracks(p) == 7
    task.trace(p, 7, "compact", random.Random(0))
    with pytest.raises(TaskError, match="k=8"):
        task.trace(p, 8, "compact", random.Random(0))
    with pytest.raises(TaskError, match="k=8"):
        validate_point("knights_knaves", 8, CPU)
    with pytest.raises(TaskError, match="style"):
        task.trace(p, 0, "fancy", random.Random(0))


def test_solution_is_unique_so_every_other_assignment_is_a_dead_end():
    for p in PROBLEMS:
        gt = p.ground_truth
        sols = [a for a in itertools.product((True, False), repeat=len(gt["names"]))
                if consistent(gt["statements"], a) is None]
        assert sols == [tuple(gt["solution"])]


def test_answers_both_forms_and_reasoning_gym_agrees():
    import reasoning_gym

    fn = reasoning_gym.get_score_answer_fn("knights_knaves")
    p = PROBLEMS[0]
    gt = p.ground_truth
    names, sol = gt["names"], gt["solution"]
    code = "".join("K" if v else "N" for v in sol)
    wrong_code = ("N" if sol[0] else "K") + code[1:]

    def s(ans):
        return score("knights_knaves", f"<think>x</think>\n<answer>{ans}</answer>", gt)

    assert s(code) == 1.0 and s(wrong_code) == 0.1
    prefill = task.prompt(p, "qwen-instruct").prefill      # a paper prompt asks for the sentence
    assert score("knights_knaves", f"x</think>\n<answer>{code}</answer>", gt, prefill=prefill) == 0.1
    assert score("knights_knaves", f"x</think>\n<answer>{p.answer}</answer>", gt, prefill=prefill) == 1.0
    assert s(p.answer) == 1.0 and fn(p.answer, {"answer": p.answer}) == 1.0
    reordered = ", ".join(f"{n} is {gt['a_knight'] if v else gt['a_knave']}"
                          for n, v in reversed(list(zip(names, sol))))
    assert s(reordered) == 1.0
    assert s(p.answer.upper()) == 1.0
    flipped = task.natural_answer(gt, tuple([not sol[0]] + list(sol[1:])))
    assert s(flipped) == 0.1 and fn(flipped, {"answer": p.answer}) < 1.0
    assert s(p.answer + f" {names[0]} is {gt['a_knave']}") == 0.1          # extra claim
    assert s(f"{names[0]} is {gt['a_knight']}") == 0.1                      # missing people
    assert s(p.answer.replace(gt["knight"], "knight")) in (0.1, 1.0)       # other words: never crash
    assert s(code.lower()) == 0.1


def test_compact_prompt_is_ascii_and_formula_language():
    for p in PROBLEMS[:10]:
        text = task.prompt(p, "compact").text
        assert text.isascii() and text.endswith("\n")
        assert len(text.strip().split("\n")) == len(p.ground_truth["names"])
        assert re.fullmatch(r"([A-Z]:[A-Z~&|>=()]+\n)+", text), text
    for template in ("base", "qwen-instruct", "baseline"):
        text = task.prompt(PROBLEMS[0], template).text
        assert "<answer>" in text and PROBLEMS[0].ground_truth["names"][0] in text
