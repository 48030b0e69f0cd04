"""ARC 1D: every generator's rule is solved, hypothesis traces with real mismatches, exact reward."""

from __future__ import annotations

import random
import re
from random import Random

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, count_backtracks, get_task, score, validate_point
from reasoning360.tasks.arc_1d import RULES, apply, rule_of
from reasoning360.tasks.gym import COMPACT_BACKTRACK, PAPER_BACKTRACK

CFG = yaml.safe_load((CONFIGS / "task" / "arc_1d.yaml").read_text())
CPU, PAPER = CFG["params"]["cpu"], CFG["params"]["paper"]
task = get_task("arc_1d")
PROBLEMS = task.generate(60, 3, CPU)


def test_every_reasoning_gym_task_has_a_rule_that_solves_it():
    from reasoning_gym.arc.arc_1d_tasks import ARC_1D_TASKS

    rng = Random(0)
    for name, (gen, kwargs) in ARC_1D_TASKS.items():
        rule = rule_of(name)
        assert rule in RULES, name
        seen = tries = 0
        while seen < 40 and tries < 4000:
            tries += 1
            ex = gen(rng, rng.randint(8, 30), **kwargs)
            if ex is None:
                continue
            seen += 1
            assert apply(rule, ex["input"]) == ex["output"], (name, ex)
        assert seen == 40, name


def test_generation_keeps_every_instance():
    for params in (CPU, PAPER):
        problems = task.generate(200, 9, params)
        # a problem is dropped only if its own rule fails or it has < min_dead_ends wrong rules
        assert problems[-1].metadata["source_index"] == 199, params


def _split(trace: str) -> tuple[str, str]:
    m = re.fullmatch(r"<think>(.*)</think>\n<answer>(.*)</answer>", trace, re.S)
    assert m, trace
    return m[1], m[2]


def _compact_dead_ends(trace: str, gt: dict) -> list[str]:
    think, answer = _split(trace)
    lines = think.split("\n")
    dead = []
    for line in lines[:-1]:
        m = re.fullmatch(r"(\w+)((?: e\d)*) e(\d)@(\d+):(\d)!=(\d)" + re.escape(COMPACT_BACKTRACK), line)
        assert m, line
        rule, e, pos, got, want = m[1], int(m[3]) - 1, int(m[4]) - 1, int(m[5]), int(m[6])
        assert rule != gt["rule"]
        for i in range(e):            # the examples it passes, it really passes
            assert apply(rule, gt["train"][i]["input"]) == gt["train"][i]["output"]
        pred = apply(rule, gt["train"][e]["input"])
        out = gt["train"][e]["output"]
        assert pred[pos] == got and out[pos] == want and got != want and pred[:pos] == out[:pos]
        dead.append(rule)
    n = len(gt["train"])
    assert lines[-1] == gt["rule"] + "".join(f" e{i + 1}" for i in range(n)) + " ok"
    assert answer == "".join(map(str, gt["test_output"]))
    return dead


def _paper_dead_ends(trace: str) -> list[str]:
    think, _ = _split(trace)
    chunks = think.split(PAPER_BACKTRACK)
    out = []
    for chunk in chunks[:-1]:
        hyp = re.findall(r"^Hypothesis: (.*)\.$", chunk, re.M)
        assert len(hyp) == 1
        assert re.search(r"They differ at position \d+ \(\d instead of \d\)\.\n$", chunk)
        out.append(hyp[0])
    assert "The rule fits every example" in chunks[-1]
    return out


@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(PROBLEMS) - 1), k=st.integers(0, 5), seed=st.integers(0, 2**32),
       style=st.sampled_from(["compact", "paper"]))
def test_trace_k_distinct_wrong_rules_and_a_correct_answer(i, k, seed, style):
    p = PROBLEMS[i]
    trace = task.trace(p, k, style, random.Random(seed))
    assert count_backtracks("arc_1d", trace) == k
    assert score("arc_1d", trace, p.ground_truth) == 1.0
    dead = _compact_dead_ends(trace, p.ground_truth) if style == "compact" else _paper_dead_ends(trace)
    assert len(dead) == k and len(set(dead)) == k
    if style == "compact":
        assert trace.isascii()
    assert task.trace(p, k, style, random.Random(seed)) == trace


def test_max_k_and_too_large():
    assert task.max_k(CPU) == 5
    assert min(task.max_backtracks(p) for p in PROBLEMS) >= 5
    p = PROBLEMS[0]
    m = task.max_backtracks(p)
    task.trace(p, m, "paper", random.Random(0))
    with pytest.raises(TaskError, match=f"k={m + 1}"):
        task.trace(p, m + 1, "compact", random.Random(0))
    with pytest.raises(TaskError, match="k=6"):
        validate_point("arc_1d", 6, CPU)
    with pytest.raises(TaskError, match="min_size"):
        validate_point("arc_1d", 1, {**CPU, "min_size": 4})


def test_exact_reward_where_reasoning_gym_can_be_hacked():
    import reasoning_gym

    fn = reasoning_gym.get_score_answer_fn("arc_1d")
    p = PROBLEMS[0]
    gt = p.ground_truth
    out = gt["test_output"]
    spaced = " ".join(map(str, out))

    def s(ans):
        return score("arc_1d", f"<think>x</think>\n<answer>{ans}</answer>", gt)

    entry = {"answer": p.answer, "metadata": {}}
    assert s(spaced) == 1.0 and fn(spaced, entry) == 1.0
    assert s("".join(map(str, out))) == 1.0
    hack = spaced + " " + spaced                       # contains the oracle: partial credit there
    assert fn(hack, entry) > 0.0 and s(hack) == 0.1
    assert s(spaced + " 0") == 0.1 and s(spaced[:-2]) == 0.1
    flipped = " ".join(map(str, [(out[0] + 1) % 10] + out[1:]))
    assert s(flipped) == 0.1
    assert s(spaced.replace("0", "\u0660")) == 0.1                    # Arabic-Indic zero
    assert s("[" + ", ".join(map(str, out)) + "]") == 0.1


def test_compact_prompt():
    p = PROBLEMS[0]
    text = task.prompt(p, "compact")[0]["content"]
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == len(p.ground_truth["train"]) + 1 and lines[-1].endswith(">")
    assert text.isascii() and re.fullmatch(r"([0-9]+>[0-9]*\n)+", text)
