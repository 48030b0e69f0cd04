"""ARC 1D: every generator's rule is solved, hypothesis traces with real mismatches (compact and
the authors' paper wording), exact reward."""

from __future__ import annotations

import random
import re
from random import Random

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, count_backtracks, get_task, score, validate_point
from reasoning360.tasks.arc_1d import RULE_WORDS, RULES, apply, rule_of
from reasoning360.tasks.gym import COMPACT_BACKTRACK

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


# The authors' sentences (reasoning_gym/arc/arc_1d.py:84-123 of their fork).
HEAD = "Looking at these three examples. "
APPLY = " Applying this rule to the test input, we get the output grid:"
NO = "The outputs do not match the given example outputs. Let's try to find another pattern."
YES = "The outputs match the given example output. Let's apply this rule to the test input and obtain the answer."
BY_WORDS = {w: r for r, w in RULE_WORDS.items()}


def _paper_dead_ends(trace: str, gt: dict) -> list[str]:
    """Parse a paper trace back into hypotheses: each is one of the authors' rule descriptions,
    its example outputs are the rule's real outputs, a dead end differs from some example, the
    last hypothesis is the right rule and the answer its output on the test input."""
    m = re.fullmatch(r"<think>(.*)\n</think>\n\n<answer>(.*)</answer>", trace, re.S)
    assert m and m[1].startswith(HEAD), trace[:200]
    blocks = m[1][len(HEAD):].split("\n\n")
    rules = []
    for j, block in enumerate(blocks):
        lines = block.split("\n")
        assert lines[0].endswith(APPLY)
        rule = BY_WORDS[lines[0][: -len(APPLY)]]
        outs = []
        for i, ex in enumerate(gt["train"], 1):
            prefix = f"Example {i}: "
            assert lines[i].startswith(prefix)
            got = apply(rule, ex["input"])
            want = ("the described transformation is impossible to be applied to this example"
                    if got is None else " ".join(map(str, got)))
            assert lines[i][len(prefix):] == want
            outs.append(got)
        last = j == len(blocks) - 1
        assert lines[len(gt["train"]) + 1:] == [YES if last else NO]
        if last:
            assert rule == gt["rule"] and outs == [e["output"] for e in gt["train"]]
        else:
            assert outs != [e["output"] for e in gt["train"]]
            rules.append(rule)
    assert m[2] == " ".join(map(str, gt["test_output"]))
    return rules


@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(PROBLEMS) - 1), k=st.integers(0, 5), seed=st.integers(0, 2**32),
       style=st.sampled_from(["compact", "paper"]))
def test_trace_k_distinct_wrong_rules_and_a_correct_answer(i, k, seed, style):
    p = PROBLEMS[i]
    trace = task.trace(p, k, style, random.Random(seed))
    assert count_backtracks("arc_1d", trace) == k
    assert score("arc_1d", trace, p.ground_truth) == 1.0
    dead = (_compact_dead_ends(trace, p.ground_truth) if style == "compact"
            else _paper_dead_ends(trace, p.ground_truth))
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
    assert s("".join(map(str, out))) == 1.0                            # compact (no prefill)
    assert s(spaced.replace(" ", "\n")) == 1.0                         # theirs: any whitespace
    hack = spaced + " " + spaced                       # contains the oracle: partial credit there
    assert fn(hack, entry) > 0.0 and s(hack) == 0.1
    assert s(spaced + " 0") == 0.1 and s(spaced[:-2]) == 0.1
    flipped = " ".join(map(str, [(out[0] + 1) % 10] + out[1:]))
    assert s(flipped) == 0.1
    assert s(spaced.replace("0", "\u0660")) == 0.1                    # Arabic-Indic zero
    assert s("[" + ", ".join(map(str, out)) + "]") == 0.1


def test_compact_prompt():
    p = PROBLEMS[0]
    text = task.prompt(p, "compact").text
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == len(p.ground_truth["train"]) + 1 and lines[-1].endswith(">")
    assert text.isascii() and re.fullmatch(r"([0-9]+>[0-9]*\n)+", text)


def test_paper_scale_traces_and_prompt_as_theirs():
    p = task.generate(1, 0, PAPER)[0]
    trace = task.trace(p, 3, "paper", random.Random(2))
    assert len(_paper_dead_ends(trace, p.ground_truth)) == 3 and count_backtracks("arc_1d", trace) == 3
    prompt = task.prompt(p, "qwen-instruct")
    # reasoning-gym/arc_1d.py:37 of their fork; the question without reasoning-gym's later
    # "Describe how you derived the rule" sentence (reasoning_gym/arc/arc_1d.py:139-140)
    assert prompt.text.endswith("\nShow your work in <think> </think> tags, and return the answer in <answer> "
                                "</answer> tags with space between each number. For example <answer> 1 3 5 7 "
                                "</answer>.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>")
    assert "Describe how" not in prompt.text and "Below is a test input grid." in prompt.text
    # with the prompt's prefill, the trace continues after <think> and is scored 1.0
    assert score("arc_1d", trace[len("<think>"):], p.ground_truth, prefill=prompt.prefill) == 1.0
    # paper prompts take the authors' answer format only: no compact digit string
    row = "".join(map(str, p.ground_truth["test_output"]))
    assert score("arc_1d", f"x</think><answer>{row}</answer>", p.ground_truth, prefill=prompt.prefill) == 0.1
