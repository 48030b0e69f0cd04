"""Advanced geometry: attempts with distinct injected mistakes caught by a check, exact reward."""

from __future__ import annotations

import random
import re

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, count_backtracks, get_task, score, validate_point
from reasoning360.tasks.gym import COMPACT_BACKTRACK, PAPER_BACKTRACK

CFG = yaml.safe_load((CONFIGS / "task" / "advanced_geometry.yaml").read_text())
CPU, PAPER = CFG["params"]["cpu"], CFG["params"]["paper"]
task = get_task("advanced_geometry")
PROBLEMS = task.generate(45, 2, CPU)
BY_TYPE = {t: [p for p in PROBLEMS if p.ground_truth["task_type"] == t]
           for t in ("orthocenter", "incircle_radius", "angle_measure")}


def _split(trace: str) -> tuple[str, str]:
    m = re.fullmatch(r"<think>(.*)</think>\n<answer>(.*)</answer>", trace, re.S)
    assert m, trace
    return m[1], m[2]


def _value(tt: str, line: str) -> str:
    key = {"orthocenter": "H", "incircle_radius": "r", "angle_measure": "B"}[tt]
    return re.search(rf"(?:^| ){key}=(\S+)", line)[1]


def _compact_dead_ends(trace: str, tt: str) -> list[str]:
    think, answer = _split(trace)
    lines = think.split("\n")
    values = []
    for line in lines[:-1]:
        assert line.endswith(COMPACT_BACKTRACK), line
        if tt == "orthocenter":        # WHY: H is off an altitude
            assert re.search(r" chk=(\S+),(\S+)\^$", line).groups() != ("0", "0"), line
        elif tt == "incircle_radius":  # WHY: r*s is not the shoelace area
            m = re.search(r" rs=(\S+) area=(\S+)\^$", line)
            assert abs(float(m[1]) - eval_frac(m[2])) > 1e-4, line
        else:                          # WHY: the angle disagrees with atan2
            m = re.search(r" B=(\S+) chk=(\S+)\^$", line)
            assert m[1] != m[2], line
        values.append(_value(tt, line))
    assert lines[-1].endswith(" ok")
    values.append(_value(tt, lines[-1]))
    assert len(set(values)) == len(values)       # every attempt reaches a different result
    return lines[:-1]


def eval_frac(text: str) -> float:
    a, _, b = text.partition("/")
    return float(a) / float(b) if b else float(a)


@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(PROBLEMS) - 1), k=st.integers(0, 4), seed=st.integers(0, 2**32),
       style=st.sampled_from(["compact", "paper"]))
def test_trace_k_distinct_caught_mistakes_and_a_correct_answer(i, k, seed, style):
    p = PROBLEMS[i]
    tt = p.ground_truth["task_type"]
    trace = task.trace(p, k, style, random.Random(seed))
    assert count_backtracks("advanced_geometry", trace) == k
    assert score("advanced_geometry", trace, p.ground_truth) == 1.0
    if style == "compact":
        dead = _compact_dead_ends(trace, tt)
        assert trace.isascii()
    else:
        think, _ = _split(trace)
        chunks = think.split(PAPER_BACKTRACK)
        dead = [c for c in chunks[:-1] if c.rstrip().endswith("The check fails.")]
        assert len(dead) == len(chunks) - 1
        assert "The check passes" in chunks[-1] and "fails" not in chunks[-1]
    assert len(dead) == k and len(set(dead)) == k
    assert task.trace(p, k, style, random.Random(seed)) == trace


def test_max_k_and_too_large():
    assert task.max_k(CPU) == 4 and task.max_k(PAPER) == 4
    assert min(task.max_backtracks(p) for p in PROBLEMS) >= 4
    p = PROBLEMS[0]
    m = task.max_backtracks(p)
    task.trace(p, m, "compact", random.Random(0))
    with pytest.raises(TaskError, match=f"k={m + 1}"):
        task.trace(p, m + 1, "paper", random.Random(0))
    with pytest.raises(TaskError, match="k=5"):
        validate_point("advanced_geometry", 5, CPU)
    with pytest.raises(TaskError, match="task_types"):
        validate_point("advanced_geometry", 1, {**CPU, "task_types": ["circumcenter"]})


def _rg_item(p):
    import reasoning_gym

    idx = p.metadata["source_index"]
    return reasoning_gym.create_dataset("advanced_geometry", size=idx + 1, seed=p.metadata["seed"],
                                        **{k: v for k, v in CPU.items() if k != "min_dead_ends"})[idx]


def test_reasoning_gym_agrees_on_our_answers():
    import reasoning_gym

    fn = reasoning_gym.get_score_answer_fn("advanced_geometry")
    for p in PROBLEMS[:20]:
        item = _rg_item(p)
        assert item["metadata"]["task_type"] == p.ground_truth["task_type"]
        ours = _split(task.trace(p, 1, "paper", random.Random(0)))[1]
        assert ours == item["answer"] and fn(ours, item) == 1.0


def test_exact_reward_cases():
    gt_o = {"task_type": "orthocenter", "A": [8, -8], "B": [-2, -7], "C": [5, 4]}   # (158/39, -214/39)
    gt_a = {"task_type": "angle_measure", "A": [1, 0], "B": [0, 0], "C": [1, 1]}    # 45 degrees
    gt_r = {"task_type": "incircle_radius", "A": [0, 0], "B": [3, 0], "C": [0, 4]}  # r = 1

    def s(ans, gt):
        return score("advanced_geometry", f"<think>x</think>\n<answer>{ans}</answer>", gt)

    for ans, want in [("(4.051, -5.487)", 1.0), ("4.051, -5.487", 1.0), ("(4.0513, -5.4872)", 1.0),
                      ("(4.05128, -5.48718)", 1.0), ("(4.052, -5.487)", 0.1), ("(4.0515, -5.487)", 0.1),
                      ("(4.05, -5.49)", 0.1), ("(-5.487, 4.051)", 0.1), ("(4.051; -5.487)", 0.1),
                      ("(4.051, -5.487, 0)", 0.1), ("(nan, nan)", 0.1), ("(1e308, 1)", 0.1),
                      ("(158/39, -214/39)", 0.1)]:
        assert s(ans, gt_o) == want, ans
    for ans, want in [("45.00\u00b0", 1.0), ("45.00", 1.0), ("45", 1.0), ("45.004 degrees", 1.0),
                      ("45.006", 0.1), ("44.99", 0.1), ("0.785", 0.1), ("inf", 0.1), ("-45", 0.1)]:
        assert s(ans, gt_a) == want, ans
    for ans, want in [("1.000", 1.0), ("1", 1.0), ("0.9996", 1.0), ("0.9994", 0.1), ("1.0006", 0.1), ("1.0005", 1.0),
                      ("+1.000", 1.0), ("1.", 0.1), (".", 0.1), ("1e0", 0.1)]:
        assert s(ans, gt_r) == want, ans
