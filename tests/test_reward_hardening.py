"""The reward on hostile model output: bounded in time, never raises, never executes anything."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings, strategies as st

from reasoning360.tasks import TaskError, count_backtracks, score
from reasoning360.tasks.answer import call_with_timeout, extract_answer, extract_tag
from reasoning360.tasks.arith import ArithError, evaluate

GT = {"numbers": [3, 7, 12], "target": 22}
GT_JSON = '{"numbers": [3, 7, 12], "target": 22}'
PWNED = "/tmp/pwned"


def wrap(answer: str, think: str = "12+7=19,19+3=22==22") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


@pytest.mark.parametrize("completion, expected", [
    (wrap("(12+7)+3"), 1.0),
    (wrap("12 + 7 + 3"), 1.0),
    (wrap(" 3+(12+7) "), 1.0),
    (wrap("(12+7)+3") + "<|im_end|>", 1.0),
    (wrap("(12+7)+3") + "  \n</s>\n", 1.0),
    (wrap("((12+7)+3)") + "<|endoftext|><|endoftext|>", 1.0),
    (wrap("12*7/3-6"), 0.1),            # 6 is not a given number
    (wrap("12+7+3+0"), 0.1),            # extra number
    (wrap("12+7"), 0.1),                # number missing
    (wrap("12+7+3+3-3"), 0.1),          # 3 reused
    (wrap("12-7+3"), 0.1),              # numbers right, value wrong
    (wrap("(12+7)+3=22"), 0.1),         # '=' not allowed in the answer
    (wrap(""), 0.1),
    (wrap("22"), 0.1),
    # the authors' rule leaves text around the tags free (tests/test_reward_format.py cites it)
    (wrap("(12+7)+3") + " trailing text", 1.0),
    ("I think " + wrap("(12+7)+3"), 1.0),
    ("<think>x</think>\n\n<answer>(12+7)+3</answer>", 1.0),
    ("<think>x</think><answer>(12+7)+3</answer>", 1.0),
    (wrap("(12+7)\n+3"), 1.0),          # whitespace inside the answer: theirs allows \s
    ("<answer>(12+7)+3</answer>", 0.0),
    ("(12+7)+3", 0.0),
    ("<think></think>\n<answer>(12+7)+3</answer>", 0.0),
    ("<think>x</think>\n<answer>(12+7)+3</answer><answer>1</answer>", 0.0),
])
def test_exact_reward_cases(completion, expected):
    assert score("countdown", completion, GT) == expected
    assert score("countdown", completion, GT_JSON) == expected


def test_exact_fractions_not_floats():
    gt = {"numbers": [1, 3, 3, 9], "target": 9}
    assert score("countdown", wrap("((1/3)*9)*3"), gt) == 1.0      # 1/3 exact
    assert score("countdown", wrap("9/(3-3)+1"), gt) == 0.1         # division by zero


HOSTILE = [
    wrap("9**9**9"), wrap("2**10"), wrap("10^1000000"), wrap("12^7^3"),
    wrap("9" * 100_000), wrap("1" * 7 + "+12+7+3"),
    "x" * 1_000_000, wrap("(12+7)+3", think="y" * 1_000_000), wrap("1+" * 500_000 + "1"),
    wrap("(" * 10_000 + "12+7+3" + ")" * 10_000), wrap("(" * 40 + "12+7+3" + ")" * 40),
    wrap("(" * 100), wrap(")" * 100), "<think>" * 100_000, "</answer>" * 100_000,
    wrap("(12+7)+3") * 2, "<think><think></think>\n<answer>(12+7)+3</answer>",
    "<think>a</think>\n<answer><answer>(12+7)+3</answer></answer>",
    "<think>a</think>\n<answer>(12+7)+3", "<think>a<answer>(12+7)+3</answer>",
    wrap("(１２+７)+３"), wrap("(12+7)−3"), wrap("(12＋7)+3"), wrap("(12+7)+٣"), wrap("(12+7)+𝟑"),
    wrap("(12+7)+3\u200b"), wrap("(12+7)\u00a0+3"),
    wrap("__import__('os').system('touch /tmp/pwned')"),
    "__import__('os').system('touch /tmp/pwned')",
    wrap("eval(\"__import__('os').system('touch /tmp/pwned')\")"),
    wrap("exec('import os; os.system(\"touch /tmp/pwned\")')"),
    wrap("[x for x in ().__class__.__bases__[0].__subclasses__()]"),
    wrap("nan"), wrap("inf"), wrap("-inf"), wrap("float('nan')"), wrap("1e308*10"), wrap("NaN+12+7+3"),
    wrap("22.0"), wrap("12.0+7+3"), wrap("-3+12+7+6"), wrap("+12+7+3"),
    "", " ", "\x00" * 1000, wrap("\x00"), "<think></think>\n<answer></answer>",
    wrap("12/0+7+3"), wrap("0/0"), wrap("(12+7)+3 # comment"), wrap("lambda: 1"),
]


def test_hostile_corpus_bounded_and_safe(tmp_path):
    pwned_before = os.path.exists(PWNED)
    local = tmp_path / "pwned"
    extra = [wrap(f"__import__('os').system('touch {local}')")]
    for completion in HOSTILE + extra + [None, b"(12+7)+3", 22, float("nan")]:
        t0 = time.perf_counter()
        s = score("countdown", completion, GT)
        n = count_backtracks("countdown", completion)
        dt = time.perf_counter() - t0
        assert s in (0.0, 0.1, 1.0), (repr(completion)[:80], s)
        assert s != 1.0, repr(completion)[:80]
        assert isinstance(n, int) and n >= 0
        assert dt < 1.0, (repr(completion)[:80], dt)
    assert not local.exists()
    assert os.path.exists(PWNED) == pwned_before


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789+-*/()^ .eE") + ["**", "１", "−", "12", "7", "3"]),
                max_size=120).map("".join))
def test_fuzz_answers_never_raise(answer):
    s = score("countdown", wrap(answer), GT)
    assert s in (0.0, 0.1, 1.0)
    if s == 1.0:      # only a genuinely correct expression earns full reward
        value, used = evaluate(answer.strip())
        assert value == 22 and sorted(used) == [3, 7, 12]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_fuzz_any_text(text):
    assert score("countdown", text, GT) in (0.0, 0.1)
    assert score("countdown", wrap(text), GT) in (0.0, 0.1, 1.0)


@pytest.mark.parametrize("expr", ["", "1+", "(1", "1)", "1 2", "2**3", "2^3", "-1", "1.5", "a",
                                  "1" * 7, "(" * 33 + "1" + ")" * 33, "+".join(["1"] * 65),
                                  "1" * 300, "１", "1/0", "1/(2-2)", "()"])
def test_arith_rejects(expr):
    with pytest.raises(ArithError):
        evaluate(expr)


def test_arith_values():
    assert evaluate("2+3*4") == (14, [2, 3, 4])
    assert evaluate("(2+3)*4") == (20, [2, 3, 4])
    assert evaluate("7/2")[0] == pytest.approx(3.5)
    assert evaluate("8-3-2")[0] == 3                 # left associative
    assert evaluate("12/3/2")[0] == 2
    assert evaluate("(" * 32 + "1" + ")" * 32)[0] == 1


def test_answer_helpers():
    assert extract_answer(wrap(" x ")) == "x"
    assert extract_answer(wrap("x" * 5000)) == "x" * 5000                  # well-formed; scored 0.1
    assert score("countdown", wrap("(12+7)+3" + " " * 5000 + "+0"), GT) == 0.1
    assert extract_answer("x" * (256 * 1024 + 1)) is None
    assert extract_tag("a <answer>1</answer> b <answer>2</answer>", "answer") == "2"
    assert extract_tag("a <answer>1</answer> b <answer>2</answer>", "answer", last=False) == "1"
    assert extract_tag("<answer>1", "answer") is None

    def slow():
        end = time.perf_counter() + 3.0
        while time.perf_counter() < end:
            pass
        return 1
    t0 = time.perf_counter()
    assert call_with_timeout(slow, seconds=0.2, default=-1) == -1
    assert time.perf_counter() - t0 < 1.0


def test_bad_ground_truth_is_a_loud_error():
    with pytest.raises(TaskError):
        score("countdown", wrap("1"), "not json")
    with pytest.raises(TaskError):
        score("countdown", wrap("1"), {"numbers": "1,2", "target": 3})
    with pytest.raises(TaskError, match="unknown task"):
        score("nope", wrap("1"), GT)
