"""Sudoku: depth-first traces whose dead ends replay to a real contradiction, honest max_k, exact reward."""

from __future__ import annotations

import random
import re

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, count_backtracks, get_task, score, validate_point
from reasoning360.tasks.gym import COMPACT_BACKTRACK, PAPER_BACKTRACK
from reasoning360.tasks.sudoku import candidates

CFG = yaml.safe_load((CONFIGS / "task" / "sudoku.yaml").read_text())
CPU, PAPER = CFG["params"]["cpu"], CFG["params"]["paper"]
task = get_task("sudoku")
PROBLEMS = task.generate(40, 5, CPU)


def _split(trace: str) -> tuple[str, str]:
    m = re.fullmatch(r"<think>(.*)</think>\n<answer>(.*)</answer>", trace, re.S)
    assert m, trace
    return m[1], m[2]


def _replay_compact(trace: str, gt: dict) -> list[tuple[int, int, int]]:
    """Replay a compact trace on the puzzle: every placement is legal, every forced fill really
    is forced, every stuck cell really has no candidate, the path fills the solution."""
    puzzle, sol = gt["puzzle"], gt["solution"]
    n = len(puzzle)
    g = [row[:] for row in puzzle]
    think, answer = _split(trace)
    dead = []
    for line in think.split("\n"):
        trial = None
        for tok in line.split(" "):
            if tok.endswith("!" + COMPACT_BACKTRACK):
                r, c = int(tok[0]) - 1, int(tok[1]) - 1
                assert trial is not None and trial[r][c] == 0 and candidates(trial, r, c) == [], tok
                trial = None
                continue
            m = re.fullmatch(r"(\d)(\d)=(\d)(\??)", tok)
            assert m, tok
            r, c, d = int(m[1]) - 1, int(m[2]) - 1, int(m[3])
            if m[4]:                                   # a guess: a wrong candidate
                assert trial is None and g[r][c] == 0 and d in candidates(g, r, c) and d != sol[r][c]
                trial = [row[:] for row in g]
                trial[r][c] = d
                dead.append((r, c, d))
            elif trial is not None:                    # a forced fill inside a refutation
                assert candidates(trial, r, c) == [d], tok
                trial[r][c] = d
            else:                                      # the next cell of the path, right digit
                assert g[r][c] == 0 and d == sol[r][c]
                assert all(g[i][j] for i in range(n) for j in range(n) if (i, j) < (r, c)), "reading order"
                g[r][c] = d
        assert trial is None, line
    assert g == sol
    assert answer == "\n".join("".join(map(str, row)) for row in sol)
    return dead


def _paper_dead_ends(trace: str) -> list[tuple[str, str]]:
    think, _ = _split(trace)
    chunks = think.split(PAPER_BACKTRACK)
    out = []
    for chunk, nxt in zip(chunks[:-1], chunks[1:]):
        tries = re.findall(r"^Try (\d) in cell \((\d),(\d)\)\.$", chunk, re.M)
        assert tries, chunk
        d, r, c = tries[-1]
        assert re.search(r"No digit fits: stuck at cell \(\d,\d\)\.\n$", chunk), chunk[-200:]
        assert nxt.startswith(f": erase {d} from cell ({r},{c}).")
        out.append((r, c, d))
    return out


@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(PROBLEMS) - 1), k=st.integers(0, 3), seed=st.integers(0, 2**32),
       style=st.sampled_from(["compact", "paper"]))
def test_trace_k_distinct_refuted_dead_ends_and_a_correct_answer(i, k, seed, style):
    p = PROBLEMS[i]
    trace = task.trace(p, k, style, random.Random(seed))
    assert count_backtracks("sudoku", trace) == k
    assert score("sudoku", trace, p.ground_truth) == 1.0
    dead = _replay_compact(trace, p.ground_truth) if style == "compact" else _paper_dead_ends(trace)
    assert len(dead) == k and len(set(dead)) == k
    if style == "compact":
        assert trace.isascii()
    assert task.trace(p, k, style, random.Random(seed)) == trace


def test_max_k_is_a_lower_bound_and_too_large_raises():
    assert task.max_k(CPU) == 3 and task.max_k(PAPER) == 10
    more = task.generate(150, 6, CPU)
    assert min(task.max_backtracks(p) for p in more) >= 3
    p = min(PROBLEMS, key=task.max_backtracks)
    m = task.max_backtracks(p)
    task.trace(p, m, "compact", random.Random(0))
    with pytest.raises(TaskError, match=f"k={m + 1}"):
        task.trace(p, m + 1, "paper", random.Random(0))
    with pytest.raises(TaskError, match="k=4"):
        validate_point("sudoku", 4, CPU)
    with pytest.raises(TaskError, match="grid"):
        validate_point("sudoku", 1, {**CPU, "grid": 5})
    with pytest.raises(TaskError, match="min_empty"):
        validate_point("sudoku", 1, {**CPU, "min_empty": 20})       # mini_sudoku allows <= 12
    with pytest.raises(TaskError, match="min_emty"):
        validate_point("sudoku", 1, {**CPU, "min_emty": 3})


def test_paper_scale_supplies_k10():
    problems = task.generate(2, 0, PAPER)
    for p in problems:
        assert task.max_backtracks(p) >= 10
        for style in ("compact", "paper"):
            trace = task.trace(p, 10, style, random.Random(1))
            assert count_backtracks("sudoku", trace) == 10
            assert score("sudoku", trace, p.ground_truth) == 1.0
        dead = _replay_compact(task.trace(p, 10, "compact", random.Random(1)), p.ground_truth)
        assert len(set(dead)) == 10


def test_reward_cases_and_reasoning_gym_agrees():
    import reasoning_gym

    fn = reasoning_gym.get_score_answer_fn("mini_sudoku")
    p = PROBLEMS[0]
    gt = p.ground_truth
    sol = gt["solution"]

    def s(ans):
        return score("sudoku", f"<think>x</think>\n<answer>{ans}</answer>", gt)

    spaced = "\n".join(" ".join(map(str, r)) for r in sol)
    assert s(spaced) == 1.0 and fn(spaced, {"answer": p.answer, "metadata": gt}) == 1.0
    assert s("\n".join("".join(map(str, r)) for r in sol)) == 1.0
    assert s("/".join("".join(map(str, r)) for r in sol)) == 1.0
    swapped = [r[:] for r in sol]
    swapped[0][0], swapped[0][1] = swapped[0][1], swapped[0][0]
    assert s("\n".join(" ".join(map(str, r)) for r in swapped)) == 0.1
    # a valid grid that ignores the clues is wrong
    other = [[(v % 4) + 1 for v in r] for r in sol]
    assert s("\n".join(" ".join(map(str, r)) for r in other)) == 0.1
    assert s(spaced.replace("1", "0")) == 0.1
    assert s(spaced + "\n1 2 3 4") == 0.1
    assert s("") == 0.1 and s("1234") == 0.1
    assert s(spaced.replace("1", "\uff11")) == 0.1                           # full-width digit


def test_compact_prompt():
    p = PROBLEMS[0]
    text = task.prompt(p, "compact")[0]["content"]
    assert text == "\n".join("".join(str(v) if v else "_" for v in r) for r in p.ground_truth["puzzle"]) + "\n"
    assert task.key(p) == "".join(str(v) for r in p.ground_truth["puzzle"] for v in r)
