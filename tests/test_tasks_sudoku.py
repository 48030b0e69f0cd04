"""Sudoku: depth-first traces whose dead ends replay to a real contradiction (compact and the
authors' paper wording), honest max_k, exact reward."""

from __future__ import annotations

import json
import random
import re

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, count_backtracks, get_task, score, validate_point
from reasoning360.tasks.gym import COMPACT_BACKTRACK
from reasoning360.tasks.sudoku import candidates

CFG = yaml.safe_load((CONFIGS / "task" / "sudoku.yaml").read_text())
CPU, PAPER = CFG["params"]["cpu"], CFG["params"]["paper"]
task = get_task("sudoku")
PROBLEMS = task.generate(40, 5, CPU)


def _split(trace: str) -> tuple[str, str]:
    m = re.fullmatch(r"<think>(.*)</think>\n<answer>(.*)</answer>", trace, re.S)
    assert m, trace
    return m[1], m[2]


# The authors' sentences (reasoning_gym/games/sudoku.py:180-261 of their fork).
LOOKING = re.compile(r"Looking at the cell at \((\d),(\d)\)\. Based on the current board, row (\d) is missing "
                     r"(\[[\d, ]*\]), column (\d) is missing (\[[\d, ]*\]), and the (\d)x\7 box is (\[[\d, ]*\])\. "
                     r"Taking the intersection of these sets, the possible values for cell \(\1,\2\) are "
                     r"(\[[\d, ]*\])\. (.*)$")
TRY = re.compile(r"Let's try to fill cell \((\d),(\d)\) with (\d)\.( The current board is:)?$")
STUCK = re.compile(r"Wait, we are stuck at cell \((\d),(\d)\)\. There are no possible values for this cell\. "
                   r"I need to go back to one of previous cells\.$")
BACK = re.compile(r"Back at \((\d),(\d)\); erase (\d)\. The current board is:$")
OUT = re.compile(r"Out of all the possible values (\[[\d, ]*\]) for cell \((\d),(\d)\), I tried (\[[\d, ]*\])\. "
                 r"Let me try to fill the cell with (\d)\.$")


def _board(g) -> list[str]:
    return [" ".join(str(v) if v else "_" for v in row) for row in g]


def _replay_paper(trace: str, gt: dict) -> list[tuple[int, int, int]]:
    """Replay a paper trace: every sentence's row/column/box/candidate lists are the board's,
    the path fills the solution in reading order, a dead end tries a wrong candidate, fills only
    forced cells, gets stuck at a cell with none, erases the digit (showing the board) and lists
    the digits tried; boards shown are the real ones; the answer is the solution grid."""
    puzzle, sol = gt["puzzle"], gt["solution"]
    n = len(puzzle)
    g = [row[:] for row in puzzle]
    m = re.fullmatch(r"<think>(.*)\n</think>\n\n<answer>\n(.*)\n</answer>", trace, re.S)
    assert m, trace[-300:]
    lines = m[1].split("\n")
    assert m[2] == "\n".join(" ".join(map(str, r)) for r in sol)
    dead, trial, stuck, tried = [], None, False, {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if (lm := LOOKING.match(line)):
            r, c = int(lm[1]) - 1, int(lm[2]) - 1
            board = g if trial is None else trial
            b = int(lm[7])
            br, bc = r // b * b, c // b * b
            assert json.loads(lm[4]) == sorted(set(range(1, n + 1)) - set(board[r]))
            assert json.loads(lm[6]) == sorted(set(range(1, n + 1)) - {board[x][c] for x in range(n)})
            assert json.loads(lm[8]) == sorted(set(range(1, n + 1)) - {board[x][y] for x in range(br, br + b)
                                                                      for y in range(bc, bc + b)})
            cands = json.loads(lm[9])
            assert board[r][c] == 0 and cands == candidates(board, r, c), line
            if (sm := STUCK.match(lm[10])):
                assert trial is not None and cands == [] and not stuck
                stuck = True
                continue
            tm = TRY.match(lm[10])
            assert tm and (int(tm[1]) - 1, int(tm[2]) - 1) == (r, c), line
            d = int(tm[3])
            assert d in cands
            if trial is not None:                       # inside a dead end: only forced cells
                assert cands == [d] and not tm[4]
                trial[r][c] = d
            elif d != sol[r][c]:                        # a wrong candidate: a dead end starts
                assert not tm[4]
                trial = [row[:] for row in g]
                trial[r][c] = d
                dead.append((r, c, d))
                tried.setdefault((r, c), []).append(d)
            else:                                       # the path, in reading order
                assert all(g[x][y] for x in range(n) for y in range(n) if (x, y) < (r, c)), "reading order"
                g[r][c] = d
                if tm[4]:
                    assert lines[i:i + n] == _board(g)
                    i += n
        elif (bm := BACK.match(line)):
            r, c, d = int(bm[1]) - 1, int(bm[2]) - 1, int(bm[3])
            assert trial is not None and stuck and trial[r][c] == d and dead[-1] == (r, c, d)
            assert lines[i:i + n] == _board(g)
            i += n
            trial, stuck = None, False
        elif (om := OUT.match(line)):
            r, c, d = int(om[2]) - 1, int(om[3]) - 1, int(om[5])
            assert trial is None and json.loads(om[4]) == tried[(r, c)] and d == sol[r][c]
            assert json.loads(om[1]) == candidates(g, r, c)
            g[r][c] = d
        else:
            raise AssertionError(f"not one of the authors' sentences: {line!r}")
    assert trial is None and g == sol
    return dead


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


@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(PROBLEMS) - 1), k=st.integers(0, 3), seed=st.integers(0, 2**32),
       style=st.sampled_from(["compact", "paper"]))
def test_trace_k_distinct_refuted_dead_ends_and_a_correct_answer(i, k, seed, style):
    p = PROBLEMS[i]
    trace = task.trace(p, k, style, random.Random(seed))
    assert count_backtracks("sudoku", trace) == k
    assert score("sudoku", trace, p.ground_truth) == 1.0
    dead = _replay_compact(trace, p.ground_truth) if style == "compact" else _replay_paper(trace, p.ground_truth)
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


def test_paper_scale_supplies_k10_in_the_authors_wording():
    assert PAPER["min_empty"] == 30 and PAPER["max_empty"] == 50       # reasoning-gym/sudoku.py:53-54
    assert PAPER["filter_splits"] == ["sft"]
    problems = task.generate(2, 0, PAPER)
    for p in problems:
        assert task.max_backtracks(p) >= 10
        for style in ("compact", "paper"):
            trace = task.trace(p, 10, style, random.Random(1))
            assert count_backtracks("sudoku", trace) == 10
            assert score("sudoku", trace, p.ground_truth) == 1.0
            assert task.trace(p, 10, style, random.Random(1)) == trace
        dead = _replay_compact(task.trace(p, 10, "compact", random.Random(1)), p.ground_truth)
        assert len(set(dead)) == 10
        paper = task.trace(p, 10, "paper", random.Random(1))
        dead = _replay_paper(paper, p.ground_truth)
        assert len(set(dead)) == 10
        # a board after each erase, and every 10th path cell not tried twice (sudoku.py:238-255)
        empty = sum(v == 0 for row in p.ground_truth["puzzle"] for v in row)
        detour_cells = len({(r, c) for r, c, _ in dead})
        assert paper.count("The current board is:") == 10 + (empty - detour_cells) // 10
        prefilled = task.prompt(p, "qwen-instruct")
        assert score("sudoku", paper[len("<think>"):], p.ground_truth, prefill=prefilled.prefill) == 1.0


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
    assert s("\n".join("".join(map(str, r)) for r in sol)) == 1.0           # compact rows
    # the authors' check: one line per row, numbers separated by whitespace (reward_score/sudoku.py:68-84)
    assert s("/".join("".join(map(str, r)) for r in sol)) == 0.1
    assert s(spaced.replace("\n", "\n\n")) == 0.1                            # a blank line is a row
    assert s(spaced.replace(" ", "\t")) == 1.0
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
    text = task.prompt(p, "compact").text
    assert text == "\n".join("".join(str(v) if v else "_" for v in r) for r in p.ground_truth["puzzle"]) + "\n"
    assert task.key(p) == "".join(str(v) for r in p.ground_truth["puzzle"] for v in r)
