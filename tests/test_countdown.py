"""Countdown: k-backtrack traces (both styles), their answers, determinism, validate_point."""

from __future__ import annotations

import hashlib
import random
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from reasoning360.tasks import (TaskError, build_data, build_traces, count_backtracks, get_task,
                                load_rows, score, validate_point)
from reasoning360.tasks.countdown import COMPACT_BACKTRACK, PAPER_BACKTRACK, iter_paths

CPU = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=20, min_target=10, max_target=100)
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
    m = re.fullmatch(r"<think>(.*)</think>\n<answer>(.*)</answer>", trace, re.S)
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


def _paper_attempts(trace: str, target: int) -> list[tuple[str, ...]]:
    think, _ = _split(trace)
    chunks = think.split(PAPER_BACKTRACK)
    seqs = []
    for chunk in chunks[:-1]:
        states = re.findall(r"Operations: (\[.*?\])\n", chunk)
        explored = re.findall(r"Exploring Operation: (\S+?), Resulting", chunk)
        verdict = re.findall(r"^(\d+),(\d+) unequal: No Solution$", chunk, re.M)
        assert len(verdict) == 1 and int(verdict[0][1]) == target and int(verdict[0][0]) != target
        assert _check_step(explored[-1]) == int(verdict[0][0])
        prefix = re.findall(r"'([^']*)'", states[-1])
        seqs.append(tuple(prefix) + (explored[-1],))
    assert re.search(rf"^{target},{target} equal: Goal Reached$", chunks[-1], re.M)
    return seqs


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
        dead = _paper_attempts(trace, target)
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
    assert count_backtracks("countdown", f"x {PAPER_BACKTRACK} to Node #0.\n" * 4) == 4
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
