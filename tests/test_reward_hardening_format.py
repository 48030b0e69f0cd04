"""The reward accepts exactly what the authors' accepts: their format rule on the prefill (the
assistant part of the prompt) + the completion, and 0 / 0.1 / 1.0 as their scorers give.

Every expected value below is derived from the authors' code (GitHub jchy20/how-much-backtrack,
commit c3502ba; files under verl/utils/reward_score/), cited per case. Their scorer runs on the
decoded prompt + response (verl/trainer/main_ppo.py:89-98; eval/baseline_eval.py:53) and cuts it
after the first "Assistant:" or "<|im_start|>assistant" (countdown.py:9-15), so what it checks is
our prefill + completion.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from reasoning360.tasks import get_task, score
from reasoning360.tasks.answer import extract_answer

GT = {"numbers": [3, 7, 12], "target": 22}
QWEN = "<|im_start|>assistant\nLet me solve this step by step.\n<think>"     # countdown.py:36 (prompt)
BASE = "Assistant: Let me solve this step by step.\n<think>"                 # countdown.py:31-32 (prompt)
OK = "(12 + 7) + 3"
TRACE = f"Step 1: 12 + 7 = 19. Step 2: 19 + 3 = 22. This matches the problem statement. This is the solution.\n</think>\n\n<answer>{OK}</answer>"

# (prefill, completion, expected score, where their code decides it; reward_score/countdown.py)
CASES = [
    # their own trace format, continuing the prefilled <think>: create_backtrack_datasets.py:79
    (QWEN, TRACE, 1.0, "17-52 format ok; 114-130 numbers and value ok"),
    (BASE, TRACE, 1.0, "10-11 base template: cut after 'Assistant:'"),
    (QWEN, TRACE + "<|im_end|>", 1.0, "nothing after </answer> is checked (45-52)"),
    (QWEN, TRACE + "\nmore text", 1.0, "45-52"),
    (QWEN, f"x</think>\n<answer>{OK}</answer>", 1.0, "17-52: no blank line needed"),
    (QWEN, f"x</think><answer>{OK}</answer>", 1.0, "17-52: nothing between the tags needed"),
    (QWEN, f"x</think>\nSo the answer is <answer>{OK}</answer>.", 1.0, "17-52: text between the tags is free"),
    (QWEN, f" x \n </think> \n\n \t<answer>\n  {OK}  \n</answer>\n", 1.0, "49: the answer is strip()ped"),
    (QWEN, f"x</think>\n<answer>(12+7)\n+3</answer>", 1.0, "47 DOTALL; 75: \\s allowed inside"),
    ("", f"I think <think>x</think>\n<answer>{OK}</answer>", 1.0, "17-52: text before <think> is free"),
    (QWEN[:-len("<think>")], f"<think>x</think>\n<answer>{OK}</answer>", 1.0, "a prefill without <think>"),
    # malformed -> 0
    (QWEN, f"<think>x</think>\n<answer>{OK}</answer>", 0.0, "18-21: a second <think> after the prefilled one"),
    (QWEN, f"x</think></think>\n<answer>{OK}</answer>", 0.0, "18-21: two </think>"),
    (QWEN, f"x\n<answer>{OK}</answer>", 0.0, "18-21: no </think>"),
    (QWEN, f" \n\t </think>\n<answer>{OK}</answer>", 0.0, "28-30: blank thinking"),
    (QWEN, f"</think>\n<answer>{OK}</answer>", 0.0, "28-30: empty thinking"),
    ("", f"</think>x<think>\n<answer>{OK}</answer>", 0.0, "23-26: </think> before <think>"),
    ("", f"<answer>{OK}</answer><think>x</think>", 0.0, "42-44: the answer before the thinking"),
    (QWEN, f"x<answer>{OK}</answer></think>", 0.0, "42-44: the answer inside the thinking"),
    (QWEN, f"x</think>\n<answer>1</answer>\n<answer>{OK}</answer>", 0.0, "32-35: two <answer>"),
    (QWEN, f"x</think>\n<answer>{OK}</answer></answer>", 0.0, "32-35: two </answer>"),
    (QWEN, f"x</think>\n</answer>{OK}<answer>", 0.0, "37-41: </answer> before <answer>"),
    (QWEN, f"x</think>\n{OK}", 0.0, "32-35: no answer tags"),
    (QWEN, f"x</think>\n<answer>{OK}</answer> Assistant: <think>", 0.0,
     "10-11: 'Assistant:' in the response is where they cut: nothing well-formed follows"),
    # well-formed but wrong -> 0.1 (format_score)
    (QWEN, "x</think>\n<answer>12 + 7</answer>", 0.1, "113-117: not every number used"),
    (QWEN, "x</think>\n<answer>(12 + 7) * 3</answer>", 0.1, "127-134: the value is not the target"),
    (QWEN, "x</think>\n<answer></answer>", 0.1, "113-117: an empty answer uses no number"),
    (QWEN, "x</think>\n<answer>(12 + 7) + 3 = 22</answer>", 0.1, "113-117: '22' is not a given number"),
]


@pytest.mark.parametrize("prefill, completion, expected, why", CASES)
def test_their_rule_case_by_case(prefill, completion, expected, why):
    assert score("countdown", completion, GT, prefill=prefill) == expected, why
    # the same through the ground truth (what the data stage stores and verl passes on)
    assert score("countdown", completion, {**GT, "prefill": prefill}) == expected, why


def test_a_compact_prompt_has_no_marker_so_the_completion_is_the_turn():
    """Ours: a compact prompt has no assistant marker (theirs would find none and score 0:
    countdown.py:14-15); its completion is the whole assistant turn."""
    assert score("countdown", f"<think>x</think>\n<answer>{OK}</answer>", GT) == 1.0
    assert score("countdown", f"Assistant: <think>x</think>\n<answer>{OK}</answer>", GT) == 1.0


# The other tasks' scorers share the format rule (sudoku.py:21-66, arc_1d.py:22-67,
# advanced_geometry.py:21-66, ...) and their answer checks.
PER_TASK = [
    ("sudoku", {"grid": 4, "min_empty": 10, "max_empty": 12, "min_dead_ends": 3,
                "filter_splits": ["sft"]}, "sudoku.py:68-84: lines of whitespace-separated numbers"),
    ("arc_1d", {"min_size": 10, "max_size": 30, "num_train": 3, "min_dead_ends": 5,
                "filter_splits": ["sft"]}, "arc_1d.py:69-79: whitespace-separated numbers"),
    ("advanced_geometry", {"min_coord": -10, "max_coord": 10, "min_dead_ends": 4, "filter_splits": ["sft"]},
     "advanced_geometry.py:91-148: the rounded string"),
]


@pytest.mark.parametrize("name, params, why", PER_TASK)
def test_their_answer_layout_for_every_task(name, params, why):
    task = get_task(name)
    p = task.generate(1, 3, params)[0]
    prefill = task.prompt(p, "qwen-instruct").prefill
    right = p.answer

    def s(completion):
        return score(name, completion, p.ground_truth, prefill=prefill)

    assert s(f"x\n</think>\n\n<answer>\n{right}\n</answer>") == 1.0, why      # their traces' layout
    assert s(f"x</think><answer>{right}</answer>") == 1.0, why
    assert s(f"x</think>\n<answer>{right}</answer><answer>{right}</answer>") == 0.0
    assert s(f"</think>\n<answer>{right}</answer>") == 0.0
    assert s(f"<think>x</think>\n<answer>{right}</answer>") == 0.0
    assert s(f"x</think>\n<answer>{right} 0</answer>") == 0.1, why


TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "x", " ", "\n", OK, "Assistant:",
          "<|im_start|>assistant", "Let me solve this step by step."]


def _reference(text: str) -> str | None:
    """The authors' rule restated from their prose and code (countdown.py:7-52), independently of
    our implementation: cut after the first marker ("Assistant:" before ChatML); then the four
    tags must appear once each, as <think> < </think> <= <answer> < </answer>, with non-blank
    thinking; the answer is what the answer tags hold, stripped."""
    for marker in ("Assistant:", "<|im_start|>assistant"):
        if marker in text:
            text = text.partition(marker)[2]
            break
    spans = {}
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        parts = text.split(tag)
        if len(parts) != 2:
            return None
        spans[tag] = len(parts[0])
    order = [spans[t] for t in ("<think>", "</think>", "<answer>", "</answer>")]
    if order != sorted(order):
        return None
    if text[spans["<think>"] + len("<think>"):spans["</think>"]].strip() == "":
        return None
    return text[spans["<answer>"] + len("<answer>"):spans["</answer>"]].strip()


@settings(max_examples=400, deadline=None)
@given(prefill=st.sampled_from(["", QWEN, BASE]),
       parts=st.lists(st.sampled_from(TOKENS), max_size=14))
def test_random_tag_soups_agree_with_the_rule(prefill, parts):
    completion = "".join(parts)
    want = _reference(prefill + completion)
    assert extract_answer(completion, prefill) == want
    assert score("countdown", completion, GT, prefill=prefill) == (
        0.0 if want is None else 1.0 if " ".join(want.split()) == OK else 0.1)


def test_reference_covers_every_case_in_the_table():
    """The restated rule gives the table's format verdicts (so both checks mean the same)."""
    for prefill, completion, expected, why in CASES:
        assert (_reference(prefill + completion) is None) == (expected == 0.0), why
    rng = random.Random(0)
    for _ in range(200):
        soup = "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 12)))
        assert (extract_answer(soup) is None) == (_reference(soup) is None)
