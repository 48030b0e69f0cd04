"""Advanced geometry: attempts with distinct injected mistakes caught by a check (compact) or by the
authors' double check (paper), exact reward as the authors' string checks."""

from __future__ import annotations

import random
import re

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, count_backtracks, get_task, score, validate_point
from reasoning360.tasks.gym import COMPACT_BACKTRACK

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


# The authors' review sentences (reasoning_gym/geometry/advanced_geometry.py:186-224, 305-409,
# 536-558 of their fork).
OBTAINED = re.compile(r"^I have obtained the answer (.+?)\. Let's double check it\.$", re.M)
MISTAKE = {
    "orthocenter": r" Oh, I made a mistake here, and (.+?) is not the correct answer\. Let's try to recalculate "
                   r"the (?:line from B to C|line from C to A|altitude from A|altitude from B|intersection of the "
                   r"two altitudes), and obtain a new answer following the same steps as before\.$",
    "incircle_radius": r" Oh, I made a mistake here, I have calculated the (?:side length from [ABC] to [ABC]|"
                       r"semiperimeter|area|in-circle radius) incorrectly, which leads to (.+?) being the wrong "
                       r"answer\. Let's try to recalculate the (?:side lengths|semiperimeter|area|in-circle radius), "
                       r"and obtain a new answer\.$",
    "angle_measure": r" Oh, I made a mistake here, and (.+?) is not the correct answer\. Let's recompute this step "
                     r"and follow through the same pipeline\.$",
}
CORRECT = {"orthocenter": "And I think this step is done correctly, so the answer is correct",
           "incircle_radius": "looks correct", "angle_measure": "Everything checks out, so the answer is correct."}


def _paper_dead_ends(trace: str, tt: str) -> list[str]:
    """Attempts of a paper trace: each ends in the authors' double check; a dead end's check
    finds a mistake and names its (distinct, wrong) answer; the last passes and is the answer."""
    m = re.fullmatch(r"<think>(.*)</think>\n\n<answer>\n(.*)\n</answer>", trace, re.S)
    assert m, trace[-300:]
    think, answer = m[1], m[2]
    obtained = OBTAINED.findall(think)
    wrong = re.findall(MISTAKE[tt], think, re.M)
    assert obtained == wrong + [answer] and answer not in wrong
    reviews = think.split("I have obtained the answer")[1:]
    for review, x in zip(reviews[:-1], wrong):
        assert "Oh, I made a mistake here" in review and CORRECT[tt] not in review.split("Oh,")[1]
    assert "mistake" not in reviews[-1] and reviews[-1].rstrip().endswith(CORRECT[tt])
    if tt != "incircle_radius":                # the plan first, as theirs
        assert think.startswith("Let's first c")
    return wrong


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
        dead = _paper_dead_ends(trace, tt)
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
                                        **{k: v for k, v in CPU.items() if k not in ("min_dead_ends", "filter_splits")})[idx]


def test_reasoning_gym_agrees_on_our_answers():
    import reasoning_gym

    fn = reasoning_gym.get_score_answer_fn("advanced_geometry")
    for p in PROBLEMS[:20]:
        item = _rg_item(p)
        assert item["metadata"]["task_type"] == p.ground_truth["task_type"]
        ours = re.search(r"<answer>\n(.*)\n</answer>$", task.trace(p, 1, "paper", random.Random(0)))[1]
        assert ours == item["answer"] and fn(ours, item) == 1.0


def test_exact_reward_cases():
    """The authors' checks are string equality (reward_score/advanced_geometry.py:91-148): the
    orthocenter's two coordinates inside parentheses (split on the comma, else on whitespace,
    each stripped), the radius and the angle (with its degree sign) as rounded strings."""
    gt_o = {"task_type": "orthocenter", "A": [8, -8], "B": [-2, -7], "C": [5, 4]}   # (158/39, -214/39)
    gt_a = {"task_type": "angle_measure", "A": [1, 0], "B": [0, 0], "C": [1, 1]}    # 45 degrees
    gt_r = {"task_type": "incircle_radius", "A": [0, 0], "B": [3, 0], "C": [0, 4]}  # r = 1
    paper = task.prompt(PROBLEMS[0], "qwen-instruct").prefill

    def s(ans, gt, prefill=""):            # with the prompt's prefill the completion starts in the thinking
        head = "x" if prefill.endswith("<think>") else "<think>x"
        return score("advanced_geometry", f"{head}</think>\n<answer>{ans}</answer>", gt, prefill=prefill)

    for ans, want in [("(4.051, -5.487)", 1.0), ("(4.051,-5.487)", 1.0), ("( 4.051 , -5.487 )", 1.0),
                      ("(4.051 -5.487)", 1.0), ("4.051, -5.487", 0.1), ("(4.0513, -5.4872)", 0.1),
                      ("(4.052, -5.487)", 0.1), ("(4.05, -5.49)", 0.1), ("(-5.487, 4.051)", 0.1),
                      ("(4.051; -5.487)", 0.1), ("(4.051, -5.487, 0)", 0.1), ("(nan, nan)", 0.1),
                      ("(1e308, 1)", 0.1), ("(158/39, -214/39)", 0.1)]:
        assert s(ans, gt_o) == want == s(ans, gt_o, paper), ans
    for ans, want in [("45.00\u00b0", 1.0), ("45.00", 1.0), ("45", 0.1), ("45.004 degrees", 0.1),
                      ("45.00 \u00b0", 0.1), ("45.01\u00b0", 0.1), ("0.785", 0.1), ("inf", 0.1), ("-45", 0.1)]:
        assert s(ans, gt_a) == want, ans
    assert s("45.00\u00b0", gt_a, paper) == 1.0 and s("45.00", gt_a, paper) == 0.1   # the sign is asked for
    for ans, want in [("1.000", 1.0), ("1", 0.1), ("1.0", 0.1), ("0.9996", 0.1), ("+1.000", 0.1), ("1.", 0.1),
                      (".", 0.1), ("1e0", 0.1)]:
        assert s(ans, gt_r) == want == s(ans, gt_r, paper), ans


def test_paper_prompt_and_question_as_theirs():
    p = task.generate(1, 0, PAPER)[0]
    tt = p.ground_truth["task_type"]
    assert "For all geometry problems" not in p.question          # their fork has no instructions
    for template in ("qwen-instruct", "baseline"):
        pr = task.prompt(p, template)
        assert pr.text.startswith("<|im_start|>system\nYou are a helpful assistant. You first thinks about")
    assert task.prompt(p, "baseline").prefill.endswith("Let me solve this step by step.")   # no <think>
    trace = task.trace(p, 3, "paper", random.Random(5))
    assert len(_paper_dead_ends(trace, tt)) == 3
    pr = task.prompt(p, "qwen-instruct")
    assert score("advanced_geometry", trace[len("<think>"):], p.ground_truth, prefill=pr.prefill) == 1.0
