"""The RL-only tasks: problems, prompts, exact verifiers, no traces."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
import yaml

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import TaskError, get_task, score, validate_point
from reasoning360.tasks.rl_only import parse_int_list, parse_number

RL_ONLY = ["color_cube_rotation", "list_functions", "zebra_puzzles", "self_reference", "gsm_symbolic"]


def cpu(name):
    return yaml.safe_load((CONFIGS / "task" / f"{name}.yaml").read_text())["params"]["cpu"]


def s(name, ans, gt):
    return score(name, f"<think>x</think>\n<answer>{ans}</answer>", gt)


@pytest.mark.parametrize("name", RL_ONLY)
def test_problems_answers_and_no_traces(name):
    import reasoning_gym

    task = get_task(name)
    assert not task.backtrack_sft
    problems = task.generate(30, 4, cpu(name))
    assert [p.question for p in problems] == [p.question for p in task.generate(30, 4, cpu(name))]
    fn = reasoning_gym.get_score_answer_fn(name)
    for p in problems:
        assert s(name, p.answer, p.ground_truth) == 1.0
        assert fn(p.answer, {"answer": p.answer, "metadata": {}}) == 1.0
        assert task.prompt(p, "compact").text.isascii()
    with pytest.raises(TaskError, match="RL-only"):
        task.trace(problems[0], 0, "compact", random.Random(0))
    with pytest.raises(TaskError, match="RL-only"):
        validate_point(name, 0, cpu(name))
    validate_point(name, None, cpu(name))
    assert task.max_k(cpu(name)) == 0


@pytest.mark.parametrize("name, gt, cases", [
    ("color_cube_rotation", {"answer": "indigo"},
     [("indigo", 1.0), ("Indigo", 1.0), (" indigo.", 1.0), ("'indigo'", 1.0), ("violet", 0.1),
      ("indigo violet", 0.1), ("ind1go", 0.1), ("", 0.1)]),
    ("zebra_puzzles", {"answer": "arnold"},
     [("arnold", 1.0), ("Arnold", 1.0), ("alice", 0.1), ("arnold and alice", 0.1), ("\u0430rnold", 0.1)]),
    ("self_reference", {"answer": "2"},
     [("2", 1.0), ("2.0", 1.0), ("+2", 1.0), ("3", 0.1), ("two", 0.1), ("2e0", 0.1), ("NaN", 0.1),
      ("\u0662", 0.1), ("02", 1.0)]),
    ("gsm_symbolic", {"answer": "3037.5"},
     [("3037.5", 1.0), ("3,037.5", 1.0), ("$3037.50", 1.0), ("3037", 0.1), ("3,03,7.5", 0.1),
      ("inf", 0.1), ("3037.5 apples", 0.1), ("6075/2", 0.1)]),
    ("list_functions", {"answer": "[28, 88, 49]"},
     [("[28, 88, 49]", 1.0), ("[28,88,49]", 1.0), ("[ 28, 88, 49 ]", 1.0), ("[28, 88]", 0.1),
      ("28, 88, 49", 0.1), ("[28, 88, 49.0]", 0.1), ("[[28, 88, 49]]", 0.1), ("[28, 88, 49,]", 0.1)]),
])
def test_exact_verifiers(name, gt, cases):
    for ans, want in cases:
        assert s(name, ans, gt) == want, (name, ans)
    assert score(name, "no tags at all", gt) == 0.0


def test_parsers():
    assert parse_number("1,234") == 1234 and parse_number("-0.50") == Decimal("-0.5")
    assert parse_number("-.5") is None and parse_number("1.") is None and parse_number("") is None
    assert parse_number("1e5") is None and parse_number("Infinity") is None and parse_number("1" * 41) is None
    assert parse_int_list("[]") == [] and parse_int_list("[-1, 2]") == [-1, 2]
    assert parse_int_list("[" + ", ".join(["1"] * 300) + "]") is None
    with pytest.raises(TaskError):
        score("gsm_symbolic", "<think>x</think>\n<answer>1</answer>", {"answer": 1})
