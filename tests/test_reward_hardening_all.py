"""Every registered task's reward on hostile model output: never raises, bounded in time, never
executes anything, never pays 1.0 for garbage."""

from __future__ import annotations

import os
import time

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TASKS, count_backtracks, get_task, score

PWNED = "/tmp/pwned"
_GT: dict[str, tuple[dict, str]] = {}


def problem(name: str) -> tuple[dict, str]:
    """(ground truth, correct answer) of one cpu-scale problem of the task."""
    if name not in _GT:
        path = CONFIGS / "task" / f"{name}.yaml"
        params = yaml.safe_load(path.read_text())["params"]["cpu"] if path.exists() else {}
        p = get_task(name).generate(1, 0, params)[0]
        _GT[name] = (p.ground_truth, p.answer)
    return _GT[name]


def wrap(answer: str, think: str = "x") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def hostile(answer: str, local: str) -> list:
    """The corpus, with the task's own correct answer mangled into look-alikes."""
    ascii_digits = "0123456789"
    fullwidth = answer.translate({ord(d): 0xFF10 + i for i, d in enumerate(ascii_digits)})
    arabic = answer.translate({ord(d): 0x0660 + i for i, d in enumerate(ascii_digits)})
    cyrillic = answer.translate(str.maketrans("aeopcxAEOPCX", "аеорсхАЕОРСХ"))
    return [
        # numbers: huge, exponents, NaN / inf
        wrap("9**9**9"), wrap("2**10"), wrap("10^1000000"), wrap("1e308*10"), wrap("1e999"),
        wrap("9" * 100_000), wrap("9" * 4000), wrap("-" + "9" * 4000), wrap("nan"), wrap("NaN"),
        wrap("inf"), wrap("-inf"), wrap("Infinity"), wrap("float('nan')"), wrap("(nan, inf)"),
        wrap("[nan, inf]"), wrap("1" * 7 + "." + "0" * 3000),
        # size
        "x" * 1_000_000, wrap(answer, think="y" * 1_000_000), wrap("1+" * 500_000 + "1"),
        wrap("a " * 2000), wrap((answer + " ") * 1000), wrap((answer + "\n") * 2000),
        # nesting
        wrap("(" * 10_000 + answer + ")" * 10_000), wrap("[" * 10_000 + "]" * 10_000),
        wrap("[" * 100), wrap(")" * 100), wrap("{" * 5000 + "}" * 5000), wrap("<" * 5000),
        # tags: unbalanced, repeated, nested, missing
        "<think>" * 100_000, "</answer>" * 100_000, wrap(answer) * 2, wrap(answer) + wrap(answer),
        "<think><think></think>\n<answer>" + answer + "</answer>",
        "<think>a</think>\n<answer><answer>" + answer + "</answer></answer>",
        "<think>a</think>\n<answer>" + answer, "<think>a<answer>" + answer + "</answer>",
        "<answer>" + answer + "</answer>", answer, "<think> </think>\n<answer>" + answer + "</answer>",
        "<answer>" + answer + "</answer><think>x</think>", "<think>x</think>" + answer,
        # unicode look-alikes of the right answer (those that differ from it)
        *[wrap(v) for v in (fullwidth, arabic, cyrillic, answer + "\u200b", "\u200b" + answer,
                            answer.replace(" ", "\u00a0"), answer.replace("-", "\u2212"),
                            answer.replace(",", "\uff0c")) if v != answer],
        # code
        wrap("__import__('os').system('touch /tmp/pwned')"), "__import__('os').system('touch /tmp/pwned')",
        wrap("eval(\"__import__('os').system('touch /tmp/pwned')\")"),
        wrap("exec('import os; os.system(\"touch /tmp/pwned\")')"),
        wrap(f"__import__('os').system('touch {local}')"),
        wrap("[x for x in ().__class__.__bases__[0].__subclasses__()]"), wrap("lambda: 1"),
        wrap("{{7*7}}"), wrap("${7*7}"), wrap("'; DROP TABLE rows; --"),
        # degenerate
        "", " ", "\x00" * 1000, wrap("\x00"), "<think></think>\n<answer></answer>", wrap(""),
        None, b"abc", 22, float("nan"), ["<think>"], {"answer": answer},
    ]


@pytest.mark.parametrize("name", TASKS)
def test_hostile_corpus_bounded_and_safe(name, tmp_path):
    gt, answer = problem(name)
    assert score(name, wrap(answer), gt) == 1.0          # the corpus mangles a scoring answer
    pwned_before = os.path.exists(PWNED)
    local = tmp_path / "pwned"
    for completion in hostile(answer, str(local)):
        t0 = time.perf_counter()
        s = score(name, completion, gt)
        n = count_backtracks(name, completion)
        dt = time.perf_counter() - t0
        assert s in (0.0, 0.1), (name, repr(completion)[:100], s)
        assert isinstance(n, int) and n >= 0
        assert dt < 1.0, (name, repr(completion)[:100], dt)
    assert not local.exists()
    assert os.path.exists(PWNED) == pwned_before


@pytest.mark.parametrize("name", TASKS)
@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=600))
def test_fuzz_any_text(name, text):
    gt, answer = problem(name)
    assert score(name, text, gt) in (0.0, 0.1) or "</answer>" in text
    s = score(name, wrap(text), gt)
    assert s in (0.0, 0.1, 1.0)
    if s == 1.0:      # only something that equals the answer up to the verifier's normalisation
        assert text.strip().lower().replace(" ", "")[:4] == answer.strip().lower().replace(" ", "")[:4]
