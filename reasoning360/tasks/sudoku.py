"""Sudoku (9x9, or the 4x4 mini sudoku at scale=cpu): fill the grid so every row, column and
box holds each digit once.

Problems come from reasoning-gym's `sudoku` (``grid: 9``) or `mini_sudoku` (``grid: 4``).
Traces come from a depth-first solver that fills the empty cells in reading order. At each
cell its candidates are the digits not yet in its row, column or box. A dead end is a wrong
candidate on the solution path whose refutation is short: place it, then fill forced cells
(cells with a single candidate) until some cell has no candidate left. Only the forced fills
that the contradiction depends on are shown (at most MAX_CHAIN). A trace shows k distinct
dead ends (distinct (cell, digit) pairs, chosen by rng, in path order), each ending in an
explicit backtrack that erases the wrong digit, then the solution.

* ``compact`` (cells are row and column, 1-based; ``?`` marks a guess, ``!`` a cell with no
  digit left)::

    <think>12=1 13=4
    21=3? 23=2 24!^
    21=4 23=3 ...</think>
    <answer>2143
    4312
    1234
    3421</answer>

* ``paper``: the authors' wording and structure (reasoning_gym/games/sudoku.py:169-268 of
  their fork): "Looking at the cell at (r,c). Based on the current board, row r is missing
  [...] ... the possible values for cell (r,c) are [...]. Let's try to fill cell (r,c) with d."
  per cell (the board every 10th cell); a dead end tries the wrong digit, follows the cells it
  forces until one has no value left ("Wait, we are stuck at cell (r,c). There are no possible
  values for this cell. I need to go back to one of previous cells."), then "Back at (r,c);
  erase d. The current board is: ..." and "Out of all the possible values [...] for cell (r,c),
  I tried [...]. Let me try to fill the cell with d."; the answer is the grid between blank
  lines. Theirs dive into a wrong branch by unseeded random choices and pick min(k, available)
  dead ends; here each dive is the short chain of forced cells that refutes the digit, and k is
  exact.

An attempt (`attempt`: what the pretrained base writes, no search) fills the empty cells in
reading order with a digit drawn among the cell's candidates, never looking ahead; when a cell
has no candidate left it says so (``24!``, the trace's check) and stops, and its answer is the
grid as far as it got (``_`` for the cells it did not fill)::

    <think>12=1 13=4 21=3 23=2 24!</think>
    <answer>2143
    3_2_
    ...</answer>

(`paper`: the trace's sentences per cell, "Wait, we are stuck at cell (r,c). There are no
possible values for this cell." where it stops.)

`min_dead_ends` (our parameter) keeps only puzzles with at least that many dead ends on the
path, so max_k(params) = min_dead_ends holds for every generated instance; it applies to the
splits named in `filter_splits` (only the SFT split needs it: the authors filter none).
"""

from __future__ import annotations

import random
from typing import Any

from .base import Problem, TaskError
from .gym import COMPACT_BACKTRACK, COMPACT_FAILED, GymTask, finish, finish_paper, gt_error, pick
from .prompts import Prompt, authors_prompt

MAX_CHAIN = 6                 # forced fills shown in one refutation at most
DATASETS = {4: "mini_sudoku", 9: "sudoku"}
DEFAULT_MIN_DEAD_ENDS = {4: 3, 9: 10}

Grid = list[list[int]]


def box_of(n: int) -> int:
    return 2 if n == 4 else 3


def peers(n: int, r: int, c: int) -> list[tuple[int, int]]:
    return _PEERS[n][r * n + c]


def _peer_table(n: int) -> list[list[tuple[int, int]]]:
    b = box_of(n)
    table = []
    for r in range(n):
        for c in range(n):
            br, bc = r // b * b, c // b * b
            out = {(r, j) for j in range(n)} | {(i, c) for i in range(n)}
            out |= {(i, j) for i in range(br, br + b) for j in range(bc, bc + b)}
            out.discard((r, c))
            table.append(sorted(out))
    return table


_PEERS = {n: _peer_table(n) for n in DATASETS}


def candidates(g: Grid, r: int, c: int) -> list[int]:
    n = len(g)
    used = {g[i][j] for i, j in peers(n, r, c)}
    return [d for d in range(1, n + 1) if d not in used]


class _Masks:
    """Row / column / box digit masks of a grid (bit d set: digit d present)."""

    def __init__(self, g: Grid):
        n = self.n = len(g)
        self.b = box_of(n)
        self.full = ((1 << (n + 1)) - 1) & ~1
        self.row = [0] * n
        self.col = [0] * n
        self.box = [0] * n
        for r in range(n):
            for c in range(n):
                if g[r][c]:
                    self.set(r, c, g[r][c])

    def bi(self, r: int, c: int) -> int:
        return r // self.b * self.b + c // self.b

    def set(self, r: int, c: int, d: int) -> None:
        bit = 1 << d
        self.row[r] |= bit
        self.col[c] |= bit
        self.box[self.bi(r, c)] |= bit

    def free(self, r: int, c: int) -> int:
        return self.full & ~(self.row[r] | self.col[c] | self.box[self.bi(r, c)])


def refute(g: Grid, r: int, c: int, d: int) -> tuple[list[tuple[int, int, int]], tuple[int, int]] | None:
    """Place d at (r, c) and fill forced cells until a cell has no candidate. Returns (the forced
    fills the contradiction depends on, in order; the stuck cell), or None when forced fills do
    not reach a contradiction."""
    n = len(g)
    m = _Masks(g)
    m.set(r, c, d)
    empty = [(i, j) for i in range(n) for j in range(n) if g[i][j] == 0 and (i, j) != (r, c)]
    order: list[tuple[int, int, int]] = []
    while True:
        frees = [m.free(i, j) for i, j in empty]
        if 0 in frees:
            stuck = empty[frees.index(0)]
            break
        t = next((t for t, f in enumerate(frees) if f & (f - 1) == 0), None)
        if t is None:
            return None
        i, j = empty.pop(t)
        v = frees[t].bit_length() - 1
        order.append((i, j, v))
        m.set(i, j, v)
    # keep only the forced fills the stuck cell depends on (its peers, transitively)
    pos = {(i, j): t for t, (i, j, _) in enumerate(order)}
    need: set[int] = set()
    todo = [stuck]
    while todo:
        cell = todo.pop()
        limit = pos.get(cell, len(order))
        for p in peers(n, *cell):
            t = pos.get(p)
            if t is not None and t < limit and t not in need:
                need.add(t)
                todo.append(p)
    return [order[t] for t in sorted(need)], stuck


def path(puzzle: Grid, solution: Grid, max_chain: int = MAX_CHAIN) -> list[dict]:
    """The solution path in reading order: per empty cell its candidates, the right digit and
    the refutable wrong candidates [(digit, chain, stuck cell)]."""
    n = len(puzzle)
    g = [row[:] for row in puzzle]
    out = []
    for r in range(n):
        for c in range(n):
            if g[r][c]:
                continue
            cands = candidates(g, r, c)
            right = solution[r][c]
            if right not in cands:
                raise TaskError(f"sudoku: solution digit {right} at ({r + 1},{c + 1}) conflicts with the puzzle")
            dead = []
            for d in cands:
                if d == right:
                    continue
                got = refute(g, r, c, d)
                if got is not None and len(got[0]) <= max_chain:
                    dead.append((d, got[0], got[1]))
            out.append({"cell": (r, c), "cands": cands, "right": right, "dead": dead})
            g[r][c] = right
    return out


def valid_solution(puzzle: Grid, grid: Grid) -> bool:
    n = len(puzzle)
    if len(grid) != n or any(len(row) != n for row in grid):
        return False
    digits = set(range(1, n + 1))
    b = box_of(n)
    for i in range(n):
        if set(grid[i]) != digits or {grid[r][i] for r in range(n)} != digits:
            return False
        br, bc = i // b * b, i % b * b
        if {grid[r][c] for r in range(br, br + b) for c in range(bc, bc + b)} != digits:
            return False
    return all(puzzle[r][c] in (0, grid[r][c]) for r in range(n) for c in range(n))


def _cell(r: int, c: int) -> str:
    return f"{r + 1}{c + 1}"


class SudokuTask(GymTask):
    name = "sudoku"
    backtrack_sft = True
    OWN_PARAMS = {"grid": 9, "min_dead_ends": -1,      # -1: the default for the grid size
                  "filter_splits": ["sft", "train", "val", "test"]}
    FILTER_PARAMS = {"min_dead_ends": 0}
    PAPER_MARKERS = ("Back at (",)

    def answer_example(self, problem: Problem) -> str:
        """A valid grid of the problem's size (a fixed pattern), to show the format."""
        n = len(problem.ground_truth["puzzle"])
        b = box_of(n)
        return self.grid_text([[(r * b + r // b + c) % n + 1 for c in range(n)] for r in range(n)], " ")

    def gym_dataset(self, params: dict[str, Any]) -> str:
        return DATASETS.get(params.get("grid", 9), "sudoku")

    def check_own(self, params: dict[str, Any]) -> None:
        n = params.get("grid", 9)
        if n not in DATASETS:
            raise TaskError(f"sudoku: parameter grid must be 4 or 9, got {n!r}")
        m = params.get("min_dead_ends", -1)
        if m < -1:
            raise TaskError(f"sudoku: parameter min_dead_ends must be >= 0, got {m}")
        check_filter_splits(self.name, params)

    def floor(self, params: dict[str, Any]) -> int:
        m = params.get("min_dead_ends", -1)
        return DEFAULT_MIN_DEAD_ENDS[params.get("grid", 9)] if m == -1 else m

    def max_k(self, params: dict[str, Any]) -> int:
        """Every generated puzzle has >= min_dead_ends dead ends (generate drops the others)."""
        self.validate_params(params)
        return self.floor(params)

    def make_problem(self, item: dict, params: dict[str, Any]) -> Problem | None:
        md = item["metadata"]
        puzzle = [[int(v) for v in row] for row in md["puzzle"]]
        solution = [[int(v) for v in row] for row in md["solution"]]
        gt = {"puzzle": puzzle, "solution": solution}
        self.parse_gt(gt)
        if not valid_solution(puzzle, solution):
            return None
        dead = sum(len(step["dead"]) for step in path(puzzle, solution))
        if dead < self.floor(params):
            return None
        return Problem(question=item["question"], answer=self.grid_text(solution, " "),
                       ground_truth=gt, metadata={"num_empty": md.get("num_empty"),
                                                  "dead_ends": dead, "difficulty": md.get("difficulty")})

    def key(self, problem: Problem) -> str:
        return "".join(str(v) for row in problem.ground_truth["puzzle"] for v in row)

    def parse_gt(self, gt: Any) -> dict:
        try:
            n = len(gt["puzzle"])
            ok = (n in DATASETS and len(gt["solution"]) == n
                  and all(isinstance(row, list) and len(row) == n and all(type(v) is int and 0 <= v <= n for v in row)
                          for row in gt["puzzle"] + gt["solution"]))
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise gt_error(self.name, gt)
        return gt

    @staticmethod
    def grid_text(g: Grid, sep: str) -> str:
        return "\n".join(sep.join(str(v) for v in row) for row in g)

    def compact_prompt(self, problem: Problem) -> str:
        g = problem.ground_truth["puzzle"]
        return "\n".join("".join(str(v) if v else "_" for v in row) for row in g) + "\n"

    def authors_prompt(self, problem: Problem, template: str) -> Prompt:
        """reasoning-gym/sudoku.py:25-42 of their fork (the base template's user line is indented
        there, and reproduced)."""
        ex = "<answer> 1 3 5\n2 4 6\n7 8 9 </answer>"
        return authors_prompt(
            template, problem.question, sep="\n", base_indent="        ",
            think=f"Show your work in <think> </think> tags, and return the answer in <answer> </answer> tags. For example, {ex}.",
            think_base=f"Show your work in <think> </think> tags, and return the answer in <answer> </answer>. For example, {ex}.",
            plain=f"Return the answer in <answer> </answer> tags. For example, {ex}.")

    # ---- traces
    def max_backtracks(self, problem: Problem) -> int:
        gt = self.parse_gt(problem.ground_truth)
        return sum(len(s["dead"]) for s in path(gt["puzzle"], gt["solution"]))

    def make_trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        gt = self.parse_gt(problem.ground_truth)
        puzzle, solution = gt["puzzle"], gt["solution"]
        steps = path(puzzle, solution)
        pool = [(t, d) for t, s in enumerate(steps) for d in range(len(s["dead"]))]
        chosen = set(pick(self.name, pool, k, rng))
        if style == "compact":
            return self._compact(steps, chosen, solution)
        return self._paper(puzzle, steps, chosen, solution)

    def _compact(self, steps, chosen, solution) -> str:
        lines: list[str] = []
        cur: list[str] = []
        for t, s in enumerate(steps):
            r, c = s["cell"]
            for di, (d, chain, stuck) in enumerate(s["dead"]):
                if (t, di) not in chosen:
                    continue
                lines.append(" ".join(cur + [f"{_cell(r, c)}={d}?"] + [f"{_cell(i, j)}={v}" for i, j, v in chain]
                                      + [f"{_cell(*stuck)}!{COMPACT_BACKTRACK}"]))
                cur = []
            cur.append(f"{_cell(r, c)}={s['right']}")
        lines.append(" ".join(cur))
        return finish("\n".join(lines), self.grid_text(solution, ""))

    def _paper(self, puzzle, steps, chosen, solution) -> str:
        n = len(puzzle)
        g = [row[:] for row in puzzle]
        lines: list[str] = []
        shown = 0
        for t, s in enumerate(steps):
            r, c = s["cell"]
            right = s["right"]
            mine = [x for di, x in enumerate(s["dead"]) if (t, di) in chosen]
            if not mine:
                shown += 1
                line = f"{_looking(g, r, c)} Let's try to fill cell ({r + 1},{c + 1}) with {right}."
                g[r][c] = right
                if shown % 10 == 0:            # their trace shows the board every 10th cell
                    line += f" The current board is:\n{_board(g)}"
                lines.append(line)
                continue
            for d, chain, stuck in mine:
                lines.append(f"{_looking(g, r, c)} Let's try to fill cell ({r + 1},{c + 1}) with {d}.")
                h = [row[:] for row in g]
                h[r][c] = d
                for i, j, v in chain:
                    lines.append(f"{_looking(h, i, j)} Let's try to fill cell ({i + 1},{j + 1}) with {v}.")
                    h[i][j] = v
                i, j = stuck
                lines.append(f"{_looking(h, i, j)} Wait, we are stuck at cell ({i + 1},{j + 1}). There are no "
                             "possible values for this cell. I need to go back to one of previous cells.")
                lines.append(f"Back at ({r + 1},{c + 1}); erase {d}. The current board is:\n{_board(g)}")
            lines.append(f"Out of all the possible values {s['cands']} for cell ({r + 1},{c + 1}), I tried "
                         f"{[d for d, _, _ in mine]}. Let me try to fill the cell with {right}.")
            g[r][c] = right
        return finish_paper("\n".join(lines) + "\n", "\n" + self.grid_text(solution, " ") + "\n")

    # ---- attempts
    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        gt = self.parse_gt(problem.ground_truth)
        g = [row[:] for row in gt["puzzle"]]
        n = len(g)
        tokens: list[str] = []
        lines: list[str] = []
        shown = 0
        for r, c in [(r, c) for r in range(n) for c in range(n) if not g[r][c]]:
            cands = candidates(g, r, c)
            if not cands:
                tokens.append(f"{_cell(r, c)}{COMPACT_FAILED}")
                lines.append(f"{_looking(g, r, c)} Wait, we are stuck at cell ({r + 1},{c + 1}). There are no "
                             "possible values for this cell.")
                break
            d = rng.choice(cands)
            tokens.append(f"{_cell(r, c)}={d}")
            shown += 1
            line = f"{_looking(g, r, c)} Let's try to fill cell ({r + 1},{c + 1}) with {d}."
            g[r][c] = d
            if shown % 10 == 0:
                line += f" The current board is:\n{_board(g)}"
            lines.append(line)
        if style == "compact":
            return finish(" ".join(tokens), "\n".join("".join(str(v) if v else "_" for v in row) for row in g))
        return finish_paper("\n".join(lines) + "\n", "\n" + _board(g) + "\n")

    # ---- reward
    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        """The authors' check (verl/utils/reward_score/sudoku.py:68-84): one line per row, the
        row's numbers separated by whitespace, equal to the solution. `compact` also accepts a
        row written as n digits."""
        want = gt["solution"]
        n = len(want)
        if len(answer) > 4 * n * n + 64:
            return False
        rows = answer.splitlines()
        if len(rows) != n:
            return False
        for line, row in zip(rows, want):
            cells = line.split()
            if compact and len(cells) == 1 and len(cells[0]) == n:
                cells = list(cells[0])
            if len(cells) != n or not all(x.isascii() and x.isdigit() and len(x) <= 4 for x in cells):
                return False
            if [int(x) for x in cells] != row:
                return False
        return True


def check_filter_splits(name: str, params: dict[str, Any]) -> None:
    splits = params.get("filter_splits", ["sft", "train", "val", "test"])
    if not isinstance(splits, list) or not set(splits) <= {"sft", "train", "val", "test"}:
        raise TaskError(f"{name}: parameter filter_splits must list splits of sft, train, val, test, "
                        f"got {splits!r}")


def _missing(values, n: int) -> list[int]:
    return sorted(set(range(1, n + 1)) - set(values))


def _looking(g: Grid, r: int, c: int) -> str:
    """The authors' sentence about one cell (reasoning_gym/games/sudoku.py:85-103)."""
    n = len(g)
    b = box_of(n)
    br, bc = r // b * b, c // b * b
    row = _missing(g[r], n)
    col = _missing((g[i][c] for i in range(n)), n)
    box = _missing((g[i][j] for i in range(br, br + b) for j in range(bc, bc + b)), n)
    cands = sorted(set(row) & set(col) & set(box))
    return (f"Looking at the cell at ({r + 1},{c + 1}). Based on the current board, row {r + 1} is "
            f"missing {row}, column {c + 1} is missing {col}, and the {b}x{b} box is {box}. Taking the "
            f"intersection of these sets, the possible values for cell ({r + 1},{c + 1}) are {cands}.")


def _board(g: Grid) -> str:
    return "\n".join(" ".join(str(v) if v else "_" for v in row) for row in g)
