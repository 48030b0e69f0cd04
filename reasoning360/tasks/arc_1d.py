"""ARC 1D: infer the rule that maps each example row to its output, apply it to the test row.

Problems come from reasoning-gym's `arc_1d`, whose ~90 generators (task names) reduce to the
distinct rules of `RULES` below (solid and colourful moves are one rule; so are the two sorts,
the two reflections and the two copy-to-dots tasks). Every rule is a function on one row,
written here (reasoning-gym has generators, not solvers); a problem is kept only when its own
task's rule reproduces every example and the test output (a check, not a filter in practice:
tests assert it keeps every instance of every task name).

Traces test hypotheses: k distinct wrong rules (rules of other tasks), each applied to the
examples until one disagrees, with the first position where it differs, then an explicit
backtrack; then the right rule, checked on every example and applied to the test input. A
wrong rule counts only if it produces a row that differs from an example's output (a rule
that fits every example is not a dead end; one that cannot be applied is not shown).
`min_dead_ends` (ours) keeps problems with at least that many wrong rules: max_k = min_dead_ends.

* ``compact``: rows as digit strings, ``e2@5:0!=8`` = on example 2 the rule puts 0 at
  position 5 (1-based) where the output has 8::

    <think>grav_l e1@1:2!=0^
    mv_r2 e1 e2 e3 ok</think>
    <answer>0008880000</answer>

* ``paper``: the authors' wording and structure (reasoning_gym/arc/arc_1d.py:84-123 of their
  fork): "Looking at these three examples. ", then per hypothesis its description (theirs,
  `RULE_WORDS`), "Applying this rule to the test input, we get the output grid:" and the rule's
  output for every example; a wrong rule ends "The outputs do not match the given example
  outputs. Let's try to find another pattern.", the right one "The outputs match the given
  example output. Let's apply this rule to the test input and obtain the answer.". Theirs take
  three random other tasks as dead ends, which may fit every example; here a dead end always
  visibly fails one.

An attempt (`attempt`: what the pretrained base writes, no search) is one rule drawn among
those that apply to the rows (the right one among them), checked on the examples as a trace
checks it, then applied to the test input whether it fit or not::

    <think>grav_l e1@1:2!=0</think>
    <answer>2220000000</answer>

(`paper`: the hypothesis in the authors' words and its outputs, then "The outputs match the
given example output. ..." or "The outputs do not all agree with the given example outputs.
Let's apply this rule to the test input anyway.")

The answer is the output row, numbers separated by whitespace (the authors' check); the compact
template also accepts the row as one digit string.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Callable

from .base import Problem, TaskError
from .gym import COMPACT_BACKTRACK, GymTask, finish, finish_paper, gt_error, int_list, pick
from .prompts import Prompt, authors_prompt
from .sudoku import check_filter_splits

Row = list[int]
MAX_ROW = 256


# ---------------------------------------------------------------- row helpers

def runs(row: Row) -> list[tuple[int, int, int]]:
    """Maximal runs of one non-zero colour: (start, length, colour)."""
    out, i, n = [], 0, len(row)
    while i < n:
        if row[i]:
            j = i
            while j < n and row[j] == row[i]:
                j += 1
            out.append((i, j - i, row[i]))
            i = j
        else:
            i += 1
    return out


def segments(row: Row) -> list[tuple[int, int]]:
    """Maximal runs of non-zero cells, any colours: (start, length)."""
    out, i, n = [], 0, len(row)
    while i < n:
        if row[i]:
            j = i
            while j < n and row[j]:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out


def mirrored(f: Callable[[Row], Row | None]) -> Callable[[Row], Row | None]:
    def g(row: Row) -> Row | None:
        out = f(row[::-1])
        return None if out is None else out[::-1]
    return g


# ---------------------------------------------------------------- rules

def shift(n: int) -> Callable[[Row], Row | None]:
    def f(row: Row) -> Row | None:
        size = len(row)
        if any(v and not 0 <= i + n < size for i, v in enumerate(row)):
            return None                      # would push colour off the row
        out = [0] * size
        for i, v in enumerate(row):
            if v:
                out[i + n] = v
        return out
    return f


def rotate(n: int) -> Callable[[Row], Row | None]:
    def f(row: Row) -> Row | None:
        size = len(row)
        return [row[(i - n) % size] for i in range(size)]
    return f


def gravity(row: Row) -> Row:
    nz = [v for v in row if v]
    return nz + [0] * (len(row) - len(nz))


def gravity_counting(row: Row) -> Row:
    c = sum(1 for v in row if v)
    return [1] * c + [0] * (len(row) - c)


def antigravity(row: Row) -> Row | None:
    if any(v not in (0, 1, 2) for v in row):
        return None
    c1, c2 = row.count(1), row.count(2)
    return [2] * c2 + [0] * (len(row) - c1 - c2) + [1] * c1


def gravity_one_step(row: Row) -> Row:
    out = row[:]
    for i in range(1, len(out)):
        if out[i] and not out[i - 1]:
            out[i - 1], out[i] = out[i], 0
    return out


def weighted(row: Row) -> Row | None:
    if any(v not in (0, 1, 2) for v in row):
        return None
    c1, c2 = row.count(1), row.count(2)
    return [2] * c2 + [1] * c1 + [0] * (len(row) - c1 - c2)


def _dot_and_block(row: Row, dot: int) -> tuple[int, tuple[int, int, int]] | None:
    dots = [i for i, v in enumerate(row) if v == dot]
    blocks = [r for r in runs(row) if r[2] != dot]
    if len(dots) != 1 or len(blocks) != 1:
        return None
    return dots[0], blocks[0]


def touch_dot(row: Row) -> Row | None:
    got = _dot_and_block(row, 1)
    if got is None:
        return None
    d, (s, ln, col) = got
    out = [0] * len(row)
    out[d] = 1
    start = d - ln if s < d else d + 1
    if start < 0 or start + ln > len(row):
        return None
    out[start:start + ln] = [col] * ln
    return out


def approach_dot(n: int) -> Callable[[Row], Row | None]:
    def f(row: Row) -> Row | None:
        got = _dot_and_block(row, 2)
        if got is None:
            return None
        d, (s, ln, col) = got
        if s < d:
            start = s + min(n, d - ln - s)
        else:
            start = s - min(n, s - d - 1)
        out = [0] * len(row)
        out[d] = 2
        out[start:start + ln] = [col] * ln
        return out
    return f


def scale_to_dot(row: Row) -> Row | None:
    got = _dot_and_block(row, 2)
    if got is None:
        return None
    d, (s, ln, col) = got
    out = [0] * len(row)
    lo, hi = (s, d) if s < d else (d, s + ln - 1)
    out[lo:hi + 1] = [col] * (hi - lo + 1)
    return out


def _unique_longest_run(row: Row):
    """(start, length, colour) of the one longest run, or None when there is none or a tie."""
    rs = runs(row)
    if not rs:
        return None
    best = max(r[1] for r in rs)
    if sum(1 for r in rs if r[1] == best) != 1:
        return None
    return next(r for r in rs if r[1] == best)


def keep_largest(row: Row) -> Row | None:
    run = _unique_longest_run(row)
    if run is None:
        return None
    s, ln, col = run
    out = [0] * len(row)
    out[s:s + ln] = [col] * ln
    return out


def majority_fill(row: Row) -> Row | None:
    segs = segments(row)
    if len(segs) != 1:
        return None
    s, ln = segs[0]
    col = Counter(row[s:s + ln]).most_common(1)[0][0]
    out = row[:]
    out[s:s + ln] = [col] * ln
    return out


def own_size(row: Row) -> Row | None:
    rs = runs(row)
    if len(rs) != 1:
        return None
    s, ln, col = rs[0]
    if s + 2 * ln > len(row):
        return None
    out = [0] * len(row)
    out[s + ln:s + 2 * ln] = [col] * ln
    return out


def fill_between(row: Row) -> Row | None:
    nz = [i for i, v in enumerate(row) if v]
    if len(nz) != 2 or row[nz[0]] != row[nz[1]]:
        return None
    out = row[:]
    out[nz[0]:nz[1] + 1] = [row[nz[0]]] * (nz[1] - nz[0] + 1)
    return out


def hollow(row: Row) -> Row | None:
    rs = runs(row)
    if len(rs) != 1:
        return None
    s, ln, col = rs[0]
    out = [0] * len(row)
    out[s] = out[s + ln - 1] = col
    return out


def copy_to_dots(row: Row) -> Row | None:
    rs = runs(row)
    if len(rs) < 2 or rs[0][0] != 0 or rs[0][1] < 2:
        return None
    ln = rs[0][1]
    out = [0] * len(row)
    out[:ln] = row[:ln]
    for s, w, col in rs[1:]:
        if w != 1:
            return None
        start = s - ln // 2
        if start < 0 or start + ln > len(row):
            return None
        out[start:start + ln] = [col] * ln
    return out


def repeat_pattern(row: Row) -> Row | None:
    segs = segments(row)
    if len(segs) != 1 or segs[0][0] != 0 or segs[0][1] % 2:
        return None
    p = segs[0][1] // 2
    pat = row[:p]
    if row[p:2 * p] != pat:
        return None
    return [pat[i % p] for i in range(len(row))]


def reverse_block(row: Row) -> Row | None:
    segs = segments(row)
    if len(segs) != 1:
        return None
    s, ln = segs[0]
    out = row[:]
    out[s:s + ln] = row[s:s + ln][::-1]
    return out


def mirror_dot(row: Row) -> Row | None:
    got = _dot_and_block(row, 2)
    if got is None:
        return None
    d, (s, ln, col) = got
    out = [0] * len(row)
    out[d] = 2
    for i in range(s, s + ln):
        j = 2 * d - i
        if not 0 <= j < len(row):
            return None
        out[j] = col
    return out


def paint_biggest(row: Row) -> Row | None:
    run = _unique_longest_run(row)
    if run is None:
        return None
    out = row[:]
    s, ln, _ = run
    out[s:s + ln] = [1] * ln
    return out


def sort_blocks(row: Row) -> Row | None:
    rs = runs(row)
    if len(rs) < 2 or len({r[2] for r in rs}) != 1:
        return None
    out, pos = [0] * len(row), 0
    for ln in sorted(r[1] for r in rs):
        if pos + ln > len(row):
            return None
        out[pos:pos + ln] = [rs[0][2]] * ln
        pos += ln + 1
    return out


def recolor_by_size(row: Row) -> Row | None:
    rs = runs(row)
    if len(rs) != 2 or rs[0][1] == rs[1][1]:
        return None
    out = row[:]
    big = max(rs, key=lambda r: r[1])
    for s, ln, _ in rs:
        out[s:s + ln] = [1 if (s, ln) == big[:2] else 2] * ln
    return out


def to_five(row: Row) -> Row:
    return [5 if v else 0 for v in row]


def palette(row: Row) -> Row | None:
    segs = segments(row)
    if len(segs) < 2 or segs[0][0] != 0:
        return None
    colours = row[:segs[0][1]]
    blocks = segs[1:]
    if len(blocks) != len(colours) or any(row[s:s + ln] != [5] * ln for s, ln in blocks):
        return None
    out = row[:]
    for (s, ln), col in zip(blocks, colours):
        out[s:s + ln] = [col] * ln
    return out


def left_half(row: Row) -> Row | None:
    rs = runs(row)
    if not rs:
        return None
    out = row[:]
    for s, ln, _ in rs:
        out[s:s + ln // 2] = [8] * (ln // 2)
    return out


def seeds(row: Row) -> Row | None:
    ones = [r for r in runs(row) if r[2] == 1 and r[1] >= 2]
    if len(ones) != 1:
        return None
    pos, size, _ = ones[0]
    n = len(row)
    out = row[:]
    found = False
    if pos - 2 >= 0 and row[pos - 2] and not row[pos - 1]:
        found = True
        col, end = row[pos - 2], pos - 2
        while end >= 0:
            start = end - size + 1
            for i in range(max(0, start), end + 1):
                out[i] = col
            if start < 1:
                break
            end = start - 2
    if pos + size + 1 < n and row[pos + size + 1] and not row[pos + size]:
        found = True
        col, start = row[pos + size + 1], pos + size + 1
        while start < n:
            for i in range(start, min(start + size, n)):
                out[i] = col
            if start + size + 1 >= n:
                break
            start += size + 1
    return out if found else None


def fill_from_pixel(row: Row) -> Row | None:
    segs = segments(row)
    if len(segs) != 1:
        return None
    s, ln = segs[0]
    if ln < 4:
        return None
    out = row[:]
    if row[s] != row[s + 1] and row[s + 1] == row[s + ln - 1]:
        out[:s + 1] = [row[s]] * (s + 1)
    elif row[s + ln - 1] != row[s + ln - 2] and row[s] == row[s + ln - 2]:
        out[s + ln - 1:] = [row[s + ln - 1]] * (len(row) - s - ln + 1)
    else:
        return None
    return out


def mark_two(row: Row) -> Row | None:
    rs = runs(row)
    out = row[:]
    for s, ln, _ in rs:
        if ln == 2:
            if s > 0:
                out[s - 1] = 3
            if s + 2 < len(row):
                out[s + 2] = 3
    return out


def fill_collision(row: Row) -> Row | None:
    n = len(row)
    if row[0] == 5 and row[-1] != 5:
        out, prev = row[:], 0
        for i in range(1, n):
            if row[i]:
                for j in range(prev + 1, i):
                    out[j] = row[i]
                prev = i
        return out
    if row[-1] == 5 and row[0] != 5:
        return mirrored(fill_collision)(row)
    return None


# id -> (function, description for the paper style)
RULES: dict[str, tuple[Callable[[Row], Row | None], str]] = {}
for _n in range(1, 5):
    RULES[f"mv_r{_n}"] = (shift(_n), f"move every coloured cell {_n} step{'s' * (_n > 1)} to the right")
    RULES[f"mv_l{_n}"] = (shift(-_n), f"move every coloured cell {_n} step{'s' * (_n > 1)} to the left")
    RULES[f"rot_r{_n}"] = (rotate(_n), f"rotate the row {_n} step{'s' * (_n > 1)} to the right, wrapping around")
    RULES[f"rot_l{_n}"] = (rotate(-_n), f"rotate the row {_n} step{'s' * (_n > 1)} to the left, wrapping around")
RULES.update({
    "grav_l": (gravity, "pack all coloured cells to the left, keeping their order"),
    "grav_r": (mirrored(gravity), "pack all coloured cells to the right, keeping their order"),
    "count_l": (gravity_counting, "count the coloured cells and write that many 1s from the left"),
    "count_r": (mirrored(gravity_counting), "count the coloured cells and write that many 1s from the right"),
    "anti_r": (antigravity, "pack the 2s to the left and the 1s to the right"),
    "anti_l": (mirrored(antigravity), "pack the 1s to the left and the 2s to the right"),
    "step_l": (gravity_one_step, "move each coloured cell one step left if that cell is empty"),
    "step_r": (mirrored(gravity_one_step), "move each coloured cell one step right if that cell is empty"),
    "heavy_l": (weighted, "pack the cells to the left, 2s first, then 1s"),
    "heavy_r": (mirrored(weighted), "pack the cells to the right, 2s outermost, then 1s"),
    "touch": (touch_dot, "slide the block until it touches the 1 dot"),
    "near1": (approach_dot(1), "move the block 1 step toward the 2 dot, stopping next to it"),
    "near2": (approach_dot(2), "move the block 2 steps toward the 2 dot, stopping next to it"),
    "near3": (approach_dot(3), "move the block 3 steps toward the 2 dot, stopping next to it"),
    "near4": (approach_dot(4), "move the block 4 steps toward the 2 dot, stopping next to it"),
    "scale": (scale_to_dot, "stretch the block until it covers the 2 dot"),
    "denoise": (keep_largest, "keep the largest block and erase the other cells"),
    "majority": (majority_fill, "repaint the block in its most common colour"),
    "own": (own_size, "move the block right by its own length"),
    "fill2": (fill_between, "fill the gap between the two cells of the same colour"),
    "hollow": (hollow, "keep only the two end cells of the block"),
    "dots": (copy_to_dots, "copy the first block onto every single dot, centred, in the dot's colour"),
    "repeat": (repeat_pattern, "repeat the pattern that appears twice at the start across the row"),
    "flip": (reverse_block, "reverse the block in place"),
    "mirror": (mirror_dot, "mirror the block across the 2 dot"),
    "paint": (paint_biggest, "paint the largest block with colour 1"),
    "sort": (sort_blocks, "sort the blocks by length from the left, one empty cell apart"),
    "size12": (recolor_by_size, "paint the longer block 1 and the shorter block 2"),
    "five": (to_five, "paint every coloured cell 5"),
    "palette": (palette, "paint the blocks of 5s with the colours at the start, in order"),
    "half": (left_half, "paint the left half of every block with colour 8"),
    "seeds": (seeds, "repeat the block of 1s outward from each seed in the seed's colour"),
    "spill": (fill_from_pixel, "extend the odd end cell of the block to the edge of the row"),
    "mark2": (mark_two, "put a 3 on both sides of every block of length 2"),
    "collide": (fill_collision, "from the 5 marker, fill each gap with the colour of the next cell"),
})


# The authors' description of each rule (reasoning_gym/arc/arc_1d_tasks.py:2182-2374 of their
# fork, the last element of each ARC_1D_TASKS entry), for the `paper` traces.
def _move_words(n: int, d: str, wrapped: bool) -> str:
    other = "left" if d == "right" else "right"
    text = f"Let's try move all pixels to the {d} by {n} pixel{'s' if n > 1 else ''}"
    return text + (f", and if it goes out of the array, wrap around the {other} of the array" if wrapped else "")


RULE_WORDS: dict[str, str] = {}
for _n in range(1, 5):
    for _d in ("right", "left"):
        RULE_WORDS[f"mv_{_d[0]}{_n}"] = _move_words(_n, _d, False)
        RULE_WORDS[f"rot_{_d[0]}{_n}"] = _move_words(_n, _d, True)


def _near(n: int) -> str:
    return ("Let\u2019s first locate the dot (color 2) and the block (a group of same nonzero values \u2260 2). "
            f"Let's move the block {n} step{'s' if n > 1 else ''} closer to the dot but not past it. If the block "
            f"is on the left of the dot, we move it right by up to {n} step{'s' if n > 1 else ''} or until it's "
            "adjacent to the dot. If it's on the right, we move it left similarly. The block\u2019s shape and "
            "order stay unchanged, and the dot itself remains fixed in place.")


RULE_WORDS.update({
    "grav_l": "Let's first find all the zero elements in the array. Then let's move them to the right, while "
              "moving all the non-zero elements to the left.",
    "grav_r": "Let's first find all the zero elements in the array. Then let's move them to the left, while "
              "moving all the non-zero elements to the right.",
    "count_l": "Let\u2019s first count how many non-zero elements are present in the input array. Then, we replace "
               "those non-zero elements with the number 1, keeping the same count. All remaining positions are "
               "filled with 0s, pushing all the 1s to the left.",
    "count_r": "Let\u2019s first count how many non-zero elements are present in the input array. Then, we replace "
               "those non-zero elements with the number 1, keeping the same count. All remaining positions are "
               "filled with 0s, pushing all the 1s to the right.",
    "anti_r": "Let\u2019s first separate all the 1s and 2s in the array. All the 2s are \u201cheavier\u201d and move to "
              "the left, while all the 1s are \u201clighter\u201d and move to the right. Let's fill the remaining "
              "space in the middle with 0s.",
    "anti_l": "Let\u2019s first separate all the 1s and 2s in the array. All the 2s are \u201cheavier\u201d and move to "
              "the right, while all the 1s are \u201clighter\u201d and move to the left. Let's fill the remaining "
              "space in the middle with 0s.",
    "step_l": "Let\u2019s move each non-zero element one step to the left if the space to its left is 0. Let's do "
              "this in order from left to right, so that only one step is allowed per element, and each element "
              "only moves if the immediate position on its left is unoccupied.",
    "step_r": "Let\u2019s move each non-zero element one step to the right if the space to its right is 0. Let's do "
              "this in order from right to left, so that only one step is allowed per element, and each element "
              "only moves if the immediate position on its right is unoccupied.",
    "heavy_l": "Let\u2019s count how many 2s and how many 1s are in the array. Since color 2 is heavier than color 1, "
               "we move all the 2s to the leftmost positions first. After that, we place all the 1s to the right "
               "of the 2s. The remaining positions are filled with 0s.",
    "heavy_r": "Let\u2019s count how many 2s and how many 1s are in the array. Since color 2 is heavier than color 1, "
               "we move all the 2s to the rightmost positions first. After that, we place all the 1s to the left "
               "of the 2s. The remaining positions are filled with 0s.",
    "touch": "Let\u2019s first find the position of the dot (value 1) and the block (a sequence of non-zero, non-1 "
             "values). Then let's try moving the block to directly touch the dot without overlapping it. If the "
             "block is to the left of the dot, we shift it right so its right end is adjacent to the dot. If the "
             "block is to the right of the dot, we shift it left so its left end touches the dot.",
    "near1": _near(1), "near2": _near(2), "near3": _near(3), "near4": _near(4),
    "scale": "Let\u2019s first locate the dot (color 2) and the block (a sequence of identical non-zero values "
             "different from 2). Let's try scale the block, so that it stretches just enough to touch the dot. "
             "Let's try to keep one end of the block fixed in its original position, and only the opposite end "
             "extends or contracts to reach the dot. If the block is on the left of the dot, it grows rightward. "
             "If it's on the right, it grows leftward. Let's try to keep the dot\u2019s position unchanged.",
    "denoise": "Let\u2019s first identify the main block \u2014 a group of consecutive cells with the same color. It "
               "looks like the block is surrounded by noise: individual pixels of the same color placed away from "
               "the block. Let's try remove all the pixels by setting them to 0.",
    "majority": "Let\u2019s first find the main block \u2014 a long sequence of the same color. Looking at this block, "
                "some pixels may be corrupted by noise: values that are different from the block\u2019s color. "
                "Let's try to clean up this block by replacing any mismatched values back to the correct block "
                "color, while leaving the rest of the array unchanged.",
    "own": "Let\u2019s first identify a block of sequence of identical non-zero values. Let's move this block to "
           "the right by a distance equal to its own size.",
    "fill2": "Let\u2019s first find the two positions in the array that share the same non-zero color. Then let's "
             "try to fill the pixels between them all with that same color.",
    "hollow": "Let's first find the endpoints of a block of the same color. Then let's try to remove all colors "
              "by changing them to 0 in between the endpoints.",
    "dots": "Let\u2019s start by identifying the original block pattern at the beginning of the array and the dot "
            "positions, which are marked with a single pixel of the same color. For every dot, let's insert a "
            "full copy of the block centered around it (with equal length to the original block), ensuring that "
            "the inserted blocks do not overlap and match the original pattern.",
    "repeat": "Let\u2019s first extract the repeating pattern from the beginning of the array \u2014 the same "
              "sequence appears twice in a row. This defines the base pattern. Let's keep copying this pattern "
              "over and over until the entire array is filled. If there\u2019s not enough space for a full "
              "repetition at the end, let's copy as many elements from the beginning of the pattern as will fit.",
    "flip": "Let\u2019s first find a block of sequence of repeated values with a distinct border pixel at either "
            "the left or right end. Let's reflects the entire block in place, so the leftmost and rightmost "
            "elements switch sides, and the order of all values in the block is flipped.",
    "mirror": "Let's try to locate a dot of color 2 and a block of a sequence of same-colored values that appears "
              "entirely to the left or right of the dot. Let't reflect the block across the dot, as if the dot "
              "were a mirror.",
    "paint": "Let\u2019s identify all the blocks of sequences of two or more adjacent cells with the same color that "
             "is not 0. Let's then find the largest block (the one with the most consecutive cells). If there\u2019s "
             "only one block of that maximum size, let's try to repaint it with a new color 1, while keeping all "
             "other blocks unchanged.",
    "size12": "Let\u2019s first try to find the two blocks of sequences of color 3, separated by at least one zero. "
              "Let's try to compare the sizes, and pain recolor the larger block to color 1, and recolor the "
              "smaller block to 2.",
    "five": "Let\u2019s go through the array and look for all non-zero values, and recolor them to 5.",
    "palette": "Let\u2019s first extract the color palette at the beginning of the array \u2014 each value represents "
               "a distinct color. Then let's look for several blocks of color 5 of the same length. Let's recolor "
               "each block using the corresponding color in the color palette.",
    "half": "Let\u2019s identify all the blocks of sequences of consecutive 2s separated by gaps. Then let's try to "
            "recolor the left half of each block to 8, and try to keep the right half unchanged.",
    "sort": "Let\u2019s identify all the blocks of sequences of the same color separated by gaps of 0s. Let's sort "
            "the blocks by size in ascending order, and reassemble them from left to right in that order. Let's "
            "try to place one 0 in between the block.",
    "seeds": "Let\u2019s identify the main block of sequence of 1s, and one or two seed pixels placed some fixed "
             "distance away from the block. If the seed is on the left, let's replicate the block leftward toward "
             "the array\u2019s start, repeating it with gaps until it hits the edge. If the seed is on the right, "
             "let's do the same but to the right.",
    "spill": "Let's first try to identify a single colored value placed either directly before or after a larger "
             "block of different color, and that is the seed pixel. If the seed is on the left of the block, let's "
             "spread the seed color leftward from the seed position to the beginning of the array. If the seed is "
             "on the right, it fills rightward to the end.",
    "mark2": "If a block has exactly size 2, we mark it by placing a special marker color (3) in the cells "
             "immediately before and after it (if within bounds).",
    "collide": "Let\u2019s locate the side marker (5), which determines the direction of filling: left-to-right if at "
               "the start, or right-to-left if at the end. We also find several colored pixels scattered in the "
               "array. These pixels act as color sources, and each one fills the empty (0) space from the previous "
               "fill boundary up to its position. The fill proceeds in order \u2014 either left-to-right or "
               "right-to-left \u2014 and each region between color sources is filled with the current pixel\u2019s "
               "color, stopping just before the next one.",
})
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def authors_question(gt: dict) -> str:
    """The question of the authors' fork (reasoning_gym/arc/arc_1d.py:128-142: reasoning-gym's
    later "Describe how you derived the rule ..." sentence is commented out there)."""
    q = "Find the common rule that maps an input grid to an output grid, given the examples below.\n\n"
    for i, ex in enumerate(gt["train"], 1):
        q += f"Example {i}:\nInput:  {_row(ex['input'])}\nOutput: {_row(ex['output'])}\n\n"
    q += "Below is a test input grid. Predict the corresponding output grid by applying the rule you found.\n"
    return q + "Input:\n" + _row(gt["test_input"])


def rule_of(task_name: str) -> str | None:
    """The rule id of a reasoning-gym arc_1d task name."""
    for d in ("right", "left"):
        for n in range(1, 5):
            for kind in ("solid", "colorful"):
                if task_name == f"move_{n}pix_{kind}_{d}":
                    return f"mv_{d[0]}{n}"
                if task_name == f"move_{n}pix_{kind}_wrapped_{d}":
                    return f"rot_{d[0]}{n}"
    table = {
        "gravity_right": "grav_l", "gravity_left": "grav_r",
        "gravity_counting_right": "count_l", "gravity_counting_left": "count_r",
        "gravity_antigravity_right": "anti_r", "gravity_antigravity_left": "anti_l",
        "gravity_one_step_right": "step_l", "gravity_one_step_left": "step_r",
        "gravity_weighted_colors_right": "heavy_l", "gravity_weighted_colors_left": "heavy_r",
        "block_touch_dot": "touch", "block_touch_dot_1pix": "near1", "block_touch_dot_2pix": "near2",
        "block_touch_dot_3pix": "near3", "block_touch_dot_4pix": "near4",
        "block_scale_to_dot": "scale", "block_and_noise_remove": "denoise",
        "block_and_noise_remove_inside": "majority", "move_block_by_own_size": "own",
        "two_points_and_fill": "fill2", "two_points_and_fill_inv": "hollow",
        "copy_block_to_dots": "dots", "copy_block_to_dots_colors": "dots",
        "repeat_pattern_full": "repeat", "reflect_block_with_border_pixel": "flip",
        "reflect_block_random": "flip", "reflect_block_around_dot": "mirror",
        "paint_biggest_block": "paint", "recolor_blocks_by_size": "size12", "change_to_five": "five",
        "recolor_blocks_from_palette": "palette", "color_left_half_blocks": "half",
        "sort_blocks_by_size": "sort", "sort_complete_sequence": "sort",
        "duplicate_block_from_seeds": "seeds", "fill_from_pixel": "spill",
        "mark_size_two_blocks": "mark2", "fill_until_collision": "collide",
    }
    return table.get(task_name)


def apply(rule: str, row: Row) -> Row | None:
    try:
        out = RULES[rule][0](list(row))
    except (IndexError, ValueError):
        return None
    return out if out is not None and len(out) == len(row) else None


def first_failure(rule: str, examples: list[dict]) -> tuple[int, int, int, int] | None:
    """(example index, position, predicted, expected) of the first disagreement, or None when
    the rule fits every example. Raises LookupError when the rule cannot be applied before
    any disagreement."""
    for e, ex in enumerate(examples):
        got = apply(rule, ex["input"])
        if got is None:
            raise LookupError(rule)
        if got != ex["output"]:
            pos = next(i for i, (a, b) in enumerate(zip(got, ex["output"])) if a != b)
            return e, pos, got[pos], ex["output"][pos]
    return None


def dead_ends(gt: dict) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Every wrong rule that visibly fails an example, in RULES order."""
    out = []
    right = gt["rule"]
    for rule in RULES:
        if rule == right:
            continue
        try:
            fail = first_failure(rule, gt["train"])
        except LookupError:
            continue
        if fail is not None:
            out.append((rule, fail))
    return out


def applicable_rules(gt: dict) -> list[str]:
    """The rules (RULES order) that can be applied to every example (up to the first one they
    get wrong) and to the test input: what an attempt draws from."""
    out = []
    for rule in RULES:
        try:
            first_failure(rule, gt["train"])
        except LookupError:
            continue
        if apply(rule, gt["test_input"]) is not None:
            out.append(rule)
    return out


def _row(row: Row, sep: str = " ") -> str:
    return sep.join(map(str, row))


MATCH = "The outputs match the given example output. Let's apply this rule to the test input and obtain the answer.\n"
MISMATCH_ANYWAY = ("The outputs do not all agree with the given example outputs. Let's apply this rule to the "
                   "test input anyway.\n")


def _looking(n_ex: int) -> str:
    return f"Looking at these {NUMBER_WORDS.get(n_ex, str(n_ex))} examples. "


def _outputs(gt: dict, rule: str) -> str:
    """A hypothesis in the authors' words (reasoning_gym/arc/arc_1d.py:84 of their fork) and
    its output on every example."""
    text = f"{RULE_WORDS[rule]} Applying this rule to the test input, we get the output grid:\n"
    for i, ex in enumerate(gt["train"], 1):
        got = apply(rule, ex["input"])
        text += f"Example {i}: " + (_row(got) if got is not None else
                                    "the described transformation is impossible to be applied to this example") + "\n"
    return text


class Arc1DTask(GymTask):
    name = "arc_1d"
    dataset = "arc_1d"
    backtrack_sft = True
    OWN_PARAMS = {"min_dead_ends": 5, "filter_splits": ["sft", "train", "val", "test"]}
    FILTER_PARAMS = {"min_dead_ends": 0}
    PAPER_MARKERS = ("The outputs do not match the given example outputs.",)
    ANSWER_EXAMPLE = "0 0 3 3 3 0 0 0"

    def check_own(self, params: dict[str, Any]) -> None:
        if params.get("min_dead_ends", 5) < 0:
            raise TaskError(f"arc_1d: parameter min_dead_ends must be >= 0, got {params['min_dead_ends']}")
        if params.get("max_size", 30) > MAX_ROW:
            raise TaskError(f"arc_1d: parameter max_size must be <= {MAX_ROW}, got {params['max_size']}")
        check_filter_splits(self.name, params)

    def max_k(self, params: dict[str, Any]) -> int:
        self.validate_params(params)
        return self.own(params)["min_dead_ends"]

    def make_problem(self, item: dict, params: dict[str, Any]) -> Problem | None:
        md = item["metadata"]
        rule = rule_of(md["task_name"])
        if rule is None:
            return None
        gt = {"task_name": md["task_name"], "rule": rule,
              "train": [{"input": list(e["input"]), "output": list(e["output"])} for e in md["train_examples"]],
              "test_input": list(md["test_example"]["input"]),
              "test_output": list(md["test_example"]["output"])}
        self.parse_gt(gt)
        try:
            if first_failure(rule, gt["train"]) is not None:
                return None
        except LookupError:
            return None
        if apply(rule, gt["test_input"]) != gt["test_output"]:
            return None
        dead = len(dead_ends(gt))
        if dead < self.own(params)["min_dead_ends"]:
            return None
        return Problem(question=authors_question(gt), answer=_row(gt["test_output"]), ground_truth=gt,
                       metadata={"task_name": md["task_name"], "dead_ends": dead,
                                 "difficulty": md.get("difficulty")})

    def parse_gt(self, gt: Any) -> dict:
        try:
            rows = [e["input"] for e in gt["train"]] + [e["output"] for e in gt["train"]]
            rows += [gt["test_input"], gt["test_output"]]
            ok = (isinstance(gt["rule"], str) and gt["rule"] in RULES and len(gt["train"]) >= 1
                  and all(int_list(r) and 1 <= len(r) <= MAX_ROW and all(0 <= v <= 9 for v in r) for r in rows))
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise gt_error(self.name, gt)
        return gt

    def key(self, problem: Problem) -> str:
        from .gym import digest
        gt = problem.ground_truth
        return digest([gt["train"], gt["test_input"]])

    def compact_prompt(self, problem: Problem) -> str:
        gt = problem.ground_truth
        lines = [f"{_row(e['input'], '')}>{_row(e['output'], '')}" for e in gt["train"]]
        return "\n".join(lines + [f"{_row(gt['test_input'], '')}>"]) + "\n"

    def authors_prompt(self, problem: Problem, template: str) -> Prompt:
        """reasoning-gym/arc_1d.py:25-42 of their fork."""
        ex = "For example <answer> 1 3 5 7 </answer>."
        return authors_prompt(
            template, problem.question, sep="\n",
            think=("Show your work in <think> </think> tags, and return the answer in <answer> </answer> tags "
                   f"with space between each number. {ex}"),
            plain=f"Return the answer in <answer> </answer> tags with space between each number. {ex}")

    # ---- traces
    def max_backtracks(self, problem: Problem) -> int:
        return len(dead_ends(self.parse_gt(problem.ground_truth)))

    def make_trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        gt = self.parse_gt(problem.ground_truth)
        pool = dead_ends(gt)
        chosen = pick(self.name, pool, k, rng)
        rng.shuffle(chosen)                   # hypotheses in a random order, not RULES order
        right = gt["rule"]
        answer = apply(right, gt["test_input"])
        if answer != gt["test_output"]:
            raise TaskError(f"arc_1d: rule {right} does not solve this problem")
        n_ex = len(gt["train"])
        if style == "compact":
            lines = []
            for rule, (e, pos, got, want) in chosen:
                ok = "".join(f" e{i + 1}" for i in range(e))
                lines.append(f"{rule}{ok} e{e + 1}@{pos + 1}:{got}!={want}{COMPACT_BACKTRACK}")
            lines.append(right + "".join(f" e{i + 1}" for i in range(n_ex)) + " ok")
            return finish("\n".join(lines), _row(answer, ""))
        think = _looking(n_ex)
        for rule, _ in chosen:
            think += _outputs(gt, rule) + ("The outputs do not match the given example outputs. "
                                           "Let's try to find another pattern.\n\n")
        think += _outputs(gt, right) + MATCH
        return finish_paper(think, _row(answer))

    # ---- attempts
    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """One rule drawn uniformly among those that can be applied to every example and to the
        test input (the right one among them), checked on the examples as a trace checks it,
        then applied to the test input whatever the check said."""
        gt = self.parse_gt(problem.ground_truth)
        rule = rng.choice(applicable_rules(gt))
        fail = first_failure(rule, gt["train"])
        answer = apply(rule, gt["test_input"])
        n_ex = len(gt["train"])
        if style == "compact":
            if fail is None:
                line = rule + "".join(f" e{i + 1}" for i in range(n_ex)) + " ok"
            else:
                e, pos, got, want = fail
                line = rule + "".join(f" e{i + 1}" for i in range(e)) + f" e{e + 1}@{pos + 1}:{got}!={want}"
            return finish(line, _row(answer, ""))
        verdict = MATCH if fail is None else MISMATCH_ANYWAY
        return finish_paper(_looking(n_ex) + _outputs(gt, rule) + verdict, _row(answer))

    # ---- reward
    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        """The authors' check (verl/utils/reward_score/arc_1d.py:69-79): the answer's
        whitespace-separated numbers equal the output row. `compact` also accepts the row as one
        digit string."""
        want = gt["test_output"]
        if len(answer) > 4 * len(want) + 16:
            return False
        cells = answer.split()
        if compact and len(cells) == 1 and len(cells[0]) == len(want):
            cells = list(cells[0])
        if len(cells) != len(want) or not all(c.isascii() and c.isdigit() and len(c) <= 4 for c in cells):
            return False
        return [int(c) for c in cells] == want
