"""Countdown: k-backtrack traces (compact and the authors' paper wording), prompts as their
make_prefix builds them, both problem sets, answers, determinism, validate_point."""

from __future__ import annotations

import hashlib
import random
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from reasoning360.tasks import (TaskError, build_data, build_traces, count_backtracks, get_task,
                                load_rows, score, validate_point)
from reasoning360.tasks.arith import evaluate
from reasoning360.tasks.countdown import COMPACT_BACKTRACK, PAPER_BACKTRACK, iter_paths

CPU = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=20, min_target=10, max_target=100,
           rl_problem_set="reasoning_gym")
PAPER = dict(min_numbers=4, max_numbers=6, min_value=1, max_value=100, min_target=100, max_target=999,
             rl_problem_set="tinyzero", tinyzero=dict(min_numbers=3, max_numbers=4, min_value=1, max_value=99,
                                                       min_target=10, max_target=100))
task = get_task("countdown")
PROBLEMS = task.generate(60, 1234, CPU)

_STEP = re.compile(r"^(\d+)([-+*/])(\d+)=(\d+)$")


def _check_step(text: str) -> int:
    m = _STEP.match(text)
    assert m, text
    x, op, y, r = int(m[1]), m[2], int(m[3]), int(m[4])
    want = {"+": x + y, "-": x - y, "*": x * y, "/": Fraction(x, y) if y else None}[op]
    assert x >= y and want == r, text
    return r


def _split(trace: str) -> tuple[str, str]:
    m = re.fullmatch(r"<think>(.*)</think>\n\n?<answer>(.*)</answer>", trace, re.S)
    assert m, trace
    return m[1], m[2]


def _compact_attempts(trace: str, target: int) -> tuple[list[str], str]:
    think, _ = _split(trace)
    lines = think.split("\n")
    dead = []
    for line in lines[:-1]:
        # every dead end states its result, compares it with the target, then backtracks
        assert line.endswith(f"!={target}{COMPACT_BACKTRACK}"), line
        ops, _, shown = line[: -len(COMPACT_BACKTRACK)].rpartition("!=")
        steps = ops.split(",")
        results = [_check_step(s) for s in steps]
        assert results[-1] != target and int(shown) == target
        dead.append(ops)
    last = lines[-1]
    assert last.endswith(f"=={target}") and COMPACT_BACKTRACK not in last
    ops = last[: -len(f"=={target}")]
    assert [_check_step(s) for s in ops.split(",")][-1] == target
    return dead, ops


# The authors' sentences (create_backtrack_datasets.py:62-79 of their fork).
PAPER_STEP = re.compile(r"Step (\d+): (\d+) ([-+*/]) (\d+) = (\d+)\. ")
BACK = re.compile(r"Wait, this doesn't lead to the correct solution\. (\d+) is not the correct answer\. "
                  r"Let me go back to step (\d+) and keep thinking from there\.$")
RESTART = "Wait, this doesn't lead to the correct solution. Let me restart."
SOLVED = "This matches the problem statement. This is the solution."


def _paper_attempts(trace: str, numbers: list[int], target: int) -> list[tuple[str, ...]]:
    """Replay a paper trace: steps numbered on from where the last dead end went back to, every
    step legal on the numbers left, a dead end a complete path that misses the target and
    follows the solution for exactly the steps it goes back to, the solution reaching the
    target, the answer an expression of the numbers equal to the target."""
    think, answer = _split(trace)
    assert think.endswith("\n") and trace.endswith("</answer>")
    lines = think[:-1].split("\n")
    correct: list[str] = []              # the solution's steps said so far
    dead: list[tuple[tuple[str, ...], int]] = []
    for li, line in enumerate(lines):
        steps = PAPER_STEP.findall(line)
        body = "".join(f"Step {a}: {x} {op} {y} = {r}. " for a, x, op, y, r in steps)
        assert line.startswith(body), line
        tail = line[len(body):]
        assert [int(a) for a, *_ in steps] == list(range(len(correct) + 1, len(numbers)))
        path = tuple(correct) + tuple(f"{x} {op} {y} = {r}" for _, x, op, y, r in steps)
        left = list(numbers)
        for st_ in path:                  # each step takes two numbers left and puts its result
            x, op, y, _, r = st_.split()
            x, y, r = int(x), int(y), int(r)
            assert _check_step(f"{x}{op}{y}={r}") == r
            left.remove(x)
            left.remove(y)
            left.append(r)
        final = left[0]
        if li == len(lines) - 1:
            assert tail == SOLVED and final == target
            solution = path
        elif tail == RESTART:
            assert final != target and not correct
            dead.append((path, 0))
        else:
            m = BACK.fullmatch(tail)
            assert m and int(m[1]) == final != target, tail
            back = int(m[2])
            assert back >= len(correct) >= 0 and back > 0
            dead.append((path, back))
            correct = list(path[:back])
    for path, back in dead:               # a dead end continues the solution's first `back` steps
        assert path[:back] == solution[:back] and path[back] != solution[back]
    value, used = evaluate(answer)
    assert value == target and sorted(used) == sorted(numbers)
    return [p for p, _ in dead]


@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(PROBLEMS) - 1), k=st.integers(0, 3), seed=st.integers(0, 2**32),
       style=st.sampled_from(["compact", "paper"]))
def test_trace_has_k_distinct_dead_ends_and_a_correct_answer(i, k, seed, style):
    p = PROBLEMS[i]
    target = p.ground_truth["target"]
    trace = task.trace(p, k, style, random.Random(seed))
    assert count_backtracks("countdown", trace) == k
    assert score("countdown", trace, p.ground_truth) == 1.0
    if style == "compact":
        dead, sol = _compact_attempts(trace, target)
        assert trace.isascii()
    else:
        dead = _paper_attempts(trace, p.ground_truth["numbers"], target)
    assert len(dead) == k and len(set(dead)) == k
    # same rng -> same trace
    assert task.trace(p, k, style, random.Random(seed)) == trace


def test_dead_ends_prefer_distinct_final_states():
    p = PROBLEMS[0]
    finals = {q.final for q in iter_paths(p.ground_truth["numbers"])} - {p.ground_truth["target"]}
    assert len(finals) >= 3
    for seed in range(20):
        trace = task.trace(p, 3, "compact", random.Random(seed))
        dead, _ = _compact_attempts(trace, p.ground_truth["target"])
        results = [int(d.rsplit("=", 1)[1]) for d in dead]
        assert len(set(results)) == 3, trace


def test_trace_answer_agrees_with_reasoning_gym_scorer():
    import reasoning_gym

    fn = reasoning_gym.get_score_answer_fn("countdown")
    for p in PROBLEMS[:10]:
        answer = _split(task.trace(p, 1, "compact", random.Random(0)))[1]
        assert fn(answer, {"metadata": p.metadata}) == 1.0


def test_k_too_large_raises():
    p = PROBLEMS[3]
    m = task.max_backtracks(p)
    assert m >= 3
    task.trace(p, m, "compact", random.Random(0))          # the largest k works
    with pytest.raises(TaskError, match=str(m + 1)):
        task.trace(p, m + 1, "compact", random.Random(0))
    with pytest.raises(TaskError):
        task.trace(p, -1, "compact", random.Random(0))
    with pytest.raises(TaskError, match="style"):
        task.trace(p, 0, "fancy", random.Random(0))


def test_max_k_is_a_lower_bound_over_instances():
    mk = task.max_k(CPU)
    assert mk == 3
    assert min(task.max_backtracks(p) for p in PROBLEMS) >= mk
    assert task.max_k({**CPU, "min_numbers": 4, "max_numbers": 4}) == 9


def test_count_backtracks_on_model_output():
    assert count_backtracks("countdown", "") == 0
    assert count_backtracks("countdown", None) == 0
    assert count_backtracks("countdown", "1+2=3!=5^\n" * 7) == 7
    assert count_backtracks("countdown", f"Step 1: 3 + 4 = 7. {PAPER_BACKTRACK} Let me restart.\n" * 4) == 4
    assert count_backtracks("countdown", "^" * 5_000_000) <= 256 * 1024     # bounded


@pytest.mark.parametrize("k, params, needle", [
    (4, CPU, "k=4"),
    (-1, CPU, "k=-1"),
    (True, CPU, "True"),
    ("2", CPU, "'2'"),
    (1.0, CPU, "1.0"),
    (1, {**CPU, "min_numbrs": 3}, "min_numbrs"),
    (1, {**CPU, "max_value": "x"}, "max_value"),
    (1, {**CPU, "min_numbers": 5, "max_numbers": 4}, "max_numbers"),
])
def test_validate_point_names_the_bad_value(k, params, needle):
    with pytest.raises(TaskError) as e:
        validate_point("countdown", k, params)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_validate_point_ok_and_unknown_task():
    for k in (0, 1, 2, 3, None):
        validate_point("countdown", k, CPU)
    with pytest.raises(TaskError, match="'sudokuu'.*countdown"):
        validate_point("sudokuu", 1, CPU)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_traces_is_byte_deterministic_and_splits_disjoint(tmp_path):
    spec = {"kind": "data", "task": "countdown", "params": CPU,
            "sizes": {"sft": 60, "train": 40, "val": 10, "test": 20}, "template": "compact", "seed": 7}
    build_data(spec, tmp_path / "data", show_progress=False)
    keys = {}
    for split, f in [("sft", "sft_problems"), ("train", "train"), ("val", "val"), ("test", "test")]:
        rows = load_rows(tmp_path / "data" / f"{f}.parquet")
        keys[split] = {",".join(map(str, sorted(r_["numbers"]))) + f">{r_['target']}"
                       for r_ in (__import__("json").loads(r["reward_model"]["ground_truth"])
                                  for r in rows)}
        assert len(keys[split]) == len(rows)          # no duplicates inside a split
    splits = list(keys)
    for a in splits:
        for b in splits:
            if a < b:
                assert not keys[a] & keys[b], (a, b)
    hashes = set()
    for attempt in range(2):
        tspec = {"kind": "traces", "task": "countdown", "data": "d", "k": 2, "style": "paper", "seed": 3}
        out = tmp_path / f"traces{attempt}"
        build_traces(tspec, tmp_path / "data", out, show_progress=False)
        hashes.add(_sha(out / "sft.parquet"))
    assert len(hashes) == 1


def test_paper_scale_traces_prompts_and_problem_sets():
    """SFT problems: reasoning-gym's 4-6 numbers, their fork's question, their make_prefix; RL/test
    problems: the tinyzero set (3-4 numbers, targets 10-100) with TinyZero's make_prefix."""
    task_ = get_task("countdown")
    sft = task_.generate(6, 2, task_.split_params(PAPER, "sft"))
    for i, p in enumerate(sft):
        numbers, target = p.ground_truth["numbers"], p.ground_truth["target"]
        assert 4 <= len(numbers) <= 6 and 100 <= target <= 999
        for k in (0, 3):
            trace = task_.trace(p, k, "paper", random.Random(i))
            assert len(_paper_attempts(trace, numbers, target)) == k == count_backtracks("countdown", trace)
        prompt = task_.prompt(p, "qwen-instruct")
        # reasoning-gym/countdown.py:36 of their fork, with their question (reasoning_gym/games/countdown.py:11-18)
        assert prompt.text == (
            "<|im_start|>system\nYou are a helpful assistant. You first think about the reasoning process in the mind "
            "and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n" + p.question +
            "Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for "
            "example <answer> (1 + 2) / 3 </answer>.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>")
        assert p.question.endswith("5. Do not include any other text or formatting.\n")
        assert score("countdown", trace[len("<think>"):], p.ground_truth, prefill=prompt.prefill) == 1.0
    rl = task_.generate(40, 2, task_.split_params(PAPER, "test"))
    assert all(p.metadata["problem_set"] == "tinyzero" for p in rl)
    assert {len(p.ground_truth["numbers"]) for p in rl} == {3, 4}
    assert all(10 <= p.ground_truth["target"] <= 100 and max(p.ground_truth["numbers"]) <= 99 for p in rl)
    p = rl[0]
    # TinyZero's make_prefix (examples/data_preprocess/countdown.py:65 of their repo)
    assert task_.prompt(p, "qwen-instruct").text == (
        "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in the mind "
        "and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using the numbers "
        f"{p.ground_truth['numbers']}, create an equation that equals {p.ground_truth['target']}. You can use basic "
        "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> "
        "tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
        "<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>")
    assert "Return the final answer" in task_.prompt(p, "baseline").text
    assert "<think> </think>" not in task_.prompt(p, "baseline").text
    assert [q.ground_truth for q in rl] == [q.ground_truth for q in task_.generate(40, 2, task_.split_params(PAPER, "val"))]
    with pytest.raises(TaskError, match="tinyzero"):
        validate_point("countdown", 1, {**PAPER, "tinyzero": {"min_numbers": 3}})
    with pytest.raises(TaskError, match="rl_problem_set"):
        validate_point("countdown", 1, {**PAPER, "rl_problem_set": "tz"})
