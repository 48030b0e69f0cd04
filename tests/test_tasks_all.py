"""Every registered task: its config, reproducible problems, prompts, and (with backtrack SFT)
byte-identical trace datasets whose every response is correct, at the cpu scale's sizes."""

from __future__ import annotations

import hashlib
import random

import pytest
import yaml

from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import (TASKS, TaskError, build_data, build_traces, count_backtracks, get_task,
                                load_rows, score, validate_point)

STUDY = ["countdown", "sudoku", "arc_1d", "advanced_geometry", "knights_knaves", "color_cube_rotation",
         "list_functions", "zebra_puzzles", "self_reference", "gsm_symbolic"]
BACKTRACK = [t for t in STUDY if yaml.safe_load((CONFIGS / "task" / f"{t}.yaml").read_text())["backtrack_sft"]]
MAX_LEN = yaml.safe_load((CONFIGS / "sft" / "default.yaml").read_text())["max_len"]


def cfg(name: str) -> dict:
    return yaml.safe_load((CONFIGS / "task" / f"{name}.yaml").read_text())


def k_values(c: dict, scale: str) -> list[int]:
    ks = c.get("k_values") or []     # RL-only tasks have no k grid
    return ks[scale] if isinstance(ks, dict) else ks


def test_every_study_task_is_registered_with_a_config():
    assert set(STUDY) <= set(TASKS)
    assert BACKTRACK == ["countdown", "sudoku", "arc_1d", "advanced_geometry", "knights_knaves"]
    for name in TASKS:
        c = cfg(name)
        task = get_task(name)
        assert c["name"] == name and c["backtrack_sft"] == task.backtrack_sft
        for scale in ("cpu", "paper"):
            params = c["params"][scale]
            validate_point(name, None, params)
            for k in k_values(c, scale):
                validate_point(name, k, params)
            if task.backtrack_sft:
                assert max(k_values(c, scale)) <= task.max_k(params)
            else:
                assert k_values(c, scale) == []
    assert k_values(cfg("sudoku"), "paper") == [0, 1, 3, 5, 10]
    for name in ("arc_1d", "advanced_geometry", "countdown"):
        assert k_values(cfg(name), "paper") == [0, 1, 2, 3]


@pytest.mark.parametrize("name", STUDY)
def test_problems_are_reproducible_and_prompts_well_formed(name):
    task = get_task(name)
    params = cfg(name)["params"]["cpu"]
    a = task.generate(12, 21, params)
    b = task.generate(12, 21, params)
    c = task.generate(12, 1021, params)     # reasoning-gym seeds item i with seed + i: keep seeds apart
    assert [(p.question, p.ground_truth, p.answer) for p in a] == [(p.question, p.ground_truth, p.answer) for p in b]
    assert [p.question for p in a] != [p.question for p in c]
    for p in a:
        ok = f"<think>x</think>\n<answer>{p.answer}</answer>"
        assert score(name, ok, p.ground_truth) == 1.0
        assert score(name, ok.replace("</think>\n", "</think>"), p.ground_truth) == 1.0   # free whitespace
        assert score(name, ok.replace("<think>x", "<think> \n"), p.ground_truth) == 0.0     # blank thinking
        assert score(name, "<think>" + ok, p.ground_truth) == 0.0                         # two <think>
        compact = task.prompt(p, "compact")
        assert compact.prefill == "" and compact.text.isascii()
        qwen = task.prompt(p, "qwen-instruct")
        assert qwen.text.startswith("<|im_start|>system\n") and qwen.text.endswith(qwen.prefill)
        assert qwen.prefill == "<|im_start|>assistant\nLet me solve this step by step.\n<think>"
        assert score(name, f"x</think>\n\n<answer>{p.answer}</answer>", p.ground_truth, prefill=qwen.prefill) == 1.0
        for template in ("base", "baseline", "qwen-instruct"):
            text = task.prompt(p, template).text
            assert "<answer>" in text and ("<think> </think>" in text) == (template != "baseline")
    with pytest.raises(TaskError, match="template"):
        task.prompt(a[0], "chatml")
    with pytest.raises(TaskError, match="unknown parameter"):
        validate_point(name, None, {**params, "not_a_param": 1})


@pytest.mark.parametrize("name", BACKTRACK)
def test_cpu_traces_fit_the_tiny_model(name):
    """Compact prompt + trace at the largest cpu k, in characters (>= tokens of the char tokenizer)."""
    task = get_task(name)
    c = cfg(name)
    params, k = c["params"]["cpu"], max(k_values(c, "cpu"))
    longest = 0
    for i, p in enumerate(task.generate(40, 5, params)):
        trace = task.trace(p, k, "compact", random.Random(i))
        assert trace.isascii() and count_backtracks(name, trace) == k
        longest = max(longest, len(task.prompt(p, "compact").text) + len(trace))
    assert longest <= MAX_LEN, (name, longest)


# One phrase per dead end of a paper trace, in the authors' words (create_backtrack_datasets.py:72-74,
# reasoning_gym/games/sudoku.py:241, arc/arc_1d.py:86, geometry/advanced_geometry.py:206-567 of their
# fork); knights_knaves is ours.
PAPER_PHRASE = {"countdown": "Wait, this doesn't lead to the correct solution.", "sudoku": "; erase ",
                "arc_1d": "The outputs do not match the given example outputs. Let's try to find another pattern.",
                "advanced_geometry": "Oh, I made a mistake here", "knights_knaves": "Wait, this assignment leads to a contradiction."}


@pytest.mark.parametrize("name", BACKTRACK)
def test_paper_traces_at_paper_scale(name):
    """At scale=paper, the largest k: exactly k dead ends, each said in the authors' phrase, the
    blank line before <answer>, score 1.0 as the model continues the prefilled qwen-instruct
    prompt, the same bytes for the same seed."""
    task = get_task(name)
    c = cfg(name)
    params, k = c["params"]["paper"], max(k_values(c, "paper"))
    for i, p in enumerate(task.generate(2, 7, task.split_params(params, "sft"))):
        trace = task.trace(p, k, "paper", random.Random(i))
        assert trace.startswith("<think>") and "</think>\n\n<answer>" in trace and trace.endswith("</answer>")
        assert count_backtracks(name, trace) == k and trace.count(PAPER_PHRASE[name]) == k
        prompt = task.prompt(p, "qwen-instruct")
        assert score(name, trace[len("<think>"):], p.ground_truth, prefill=prompt.prefill) == 1.0
        assert score(name, trace, p.ground_truth) == 1.0
        assert task.trace(p, k, "paper", random.Random(i)) == trace
        if task.max_backtracks(p) > k:        # a choice to make: another seed makes another one
            assert task.trace(p, k, "paper", random.Random(i + 100)) != trace


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", BACKTRACK)
def test_trace_datasets_are_byte_identical_and_correct(name, tmp_path):
    c = cfg(name)
    k = min(k_values(c, "cpu")[1:] or [1])
    spec = {"kind": "data", "task": name, "params": c["params"]["cpu"],
            "sizes": {"sft": 24, "train": 8, "val": 2, "test": 6}, "template": "compact", "seed": 3}
    build_data(spec, tmp_path / "d", show_progress=False)
    shas = set()
    for style in ("compact", "paper"):
        for attempt in range(2):
            out = tmp_path / f"t-{style}-{attempt}"
            build_traces({"kind": "traces", "task": name, "data": "x", "k": k, "style": style, "seed": 1},
                         tmp_path / "d", out, show_progress=False)
            shas.add((style, _sha(out / "sft.parquet")))
            rows = load_rows(out / "sft.parquet")
            assert len(rows) == 24
            for r in rows:
                assert count_backtracks(name, r["response"]) == k
                assert score(name, r["response"], r["reward_model"]["ground_truth"]) == 1.0
    assert len(shas) == 2            # one hash per style: reruns are byte-identical


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_backtrack_all_plans_every_task_with_its_own_k(scale, tmp_path):
    from compose import compose_cfg, fake_checkpoint
    from reasoning360.sweep import main

    extra = (["scale=paper", f"model.path={fake_checkpoint(tmp_path / 'm')}", "launcher=slurm"]
             if scale == "paper" else [])
    c, plan, _, _ = main.build(compose_cfg(f"paths.root={tmp_path}", "+grid=backtrack_all", *extra))
    got = {}
    for pp in plan.points:
        got.setdefault(pp.point.task, []).append(pp.point.variant)
    want = {t: [f"k{k}" for k in k_values(cfg(t), scale)] + ["cold_start"] for t in STUDY}
    assert got == want
    assert len(plan.points) == (29 if scale == "cpu" else 31)


def test_smoke_all_plans_one_point_per_task(tmp_path):
    from compose import compose_cfg, fake_checkpoint
    from reasoning360.sweep import main

    c, plan, _, _ = main.build(compose_cfg(f"paths.root={tmp_path}", "+grid=smoke_all"))
    assert [pp.point.name for pp in plan.points] == (
        [f"{t}-k1-s0" for t in BACKTRACK] + [f"{t}-cold_start-s0" for t in STUDY if t not in BACKTRACK])
    assert c["data"]["sft_size"] <= 300 and c["sft"]["max_steps"] <= 30 and c["rl"]["steps"] <= 4


def test_prompt_contract_local_engine_and_verl_template():
    """A stored prompt is fed verbatim: the local engine renders the one message as is even when
    the tokenizer has a chat template, and verl's tokenizer given VERBATIM_CHAT_TEMPLATE renders
    the same text (an SFT example: prompt + response + EOS, as the authors' SFT dataset)."""
    from reasoning360.engines.local import data as D
    from reasoning360.engines.local.tokenizer import build_char_tokenizer
    from reasoning360.tasks.prompts import VERBATIM_CHAT_TEMPLATE, to_messages

    task = get_task("countdown")
    p = task.generate(1, 0, cfg("countdown")["params"]["paper"])[0]
    prompt = task.prompt(p, "qwen-instruct")
    messages = to_messages(prompt)
    tok = build_char_tokenizer()
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    assert D.render_prompt(tok, messages) == prompt.text                  # no template applied
    assert D.encode_prompt(tok, prompt.text) == tok(prompt.text)["input_ids"]
    tok.chat_template = VERBATIM_CHAT_TEMPLATE
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == prompt.text
    response = "x</think>\n\n<answer>1</answer>"
    full = messages + [{"role": "assistant", "content": response}]
    assert tok.apply_chat_template(full, tokenize=False) == prompt.text + response + tok.eos_token
    with pytest.raises(TaskError, match="one message"):
        D.render_prompt(tok, messages + messages)


SYS = ("You are a helpful assistant. You first think about the reasoning process in the mind and then provides "
       "the user with the answer.")
SYS_S = SYS.replace("You first think", "You first thinks")
PRE = "Let me solve this step by step.\n<think>"
BASE = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
        "assistant first thinks about the reasoning process in the mind and then provides the user with the answer.\n")


def chat(system, user, prefill=PRE):
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n{prefill}")


# The authors' make_prefix f-strings, rebuilt per task and template (reasoning-gym/<task>.py @ c3502ba).
AUTHORS = {
    ("sudoku", "qwen-instruct"): lambda q: chat(SYS, f"{q}\nShow your work in <think> </think> tags, and return the answer in <answer> </answer> tags. For example, <answer> 1 3 5\n2 4 6\n7 8 9 </answer>."),   # sudoku.py:37
    ("sudoku", "baseline"): lambda q: chat(SYS, f"{q}\nReturn the answer in <answer> </answer> tags. For example, <answer> 1 3 5\n2 4 6\n7 8 9 </answer>."),   # sudoku.py:41
    ("sudoku", "base"): lambda q: BASE + f"        User: {q}\nShow your work in <think> </think> tags, and return the answer in <answer> </answer>. For example, <answer> 1 3 5\n2 4 6\n7 8 9 </answer>.\nAssistant: {PRE}",   # sudoku.py:30-33
    ("arc_1d", "baseline"): lambda q: chat(SYS, f"{q}\nReturn the answer in <answer> </answer> tags with space between each number. For example <answer> 1 3 5 7 </answer>."),   # arc_1d.py:41
    ("arc_1d", "base"): lambda q: BASE + f"User: {q}\nShow your work in <think> </think> tags, and return the answer in <answer> </answer> tags with space between each number. For example <answer> 1 3 5 7 </answer>.\nAssistant: {PRE}",   # arc_1d.py:30-33
    ("color_cube_rotation", "qwen-instruct"): lambda q: chat(SYS_S, f"{q}\nShow your work in <think> </think> tags, and return the answer in <answer> </answer>. For example <answer> cyan </answer>."),   # color_cube_rotation.py:37
    ("color_cube_rotation", "baseline"): lambda q: chat(SYS, f"{q}\nReturn the answer in <answer> </answer>. For example <answer> cyan </answer>."),   # color_cube_rotation.py:41
    ("list_functions", "qwen-instruct"): lambda q: chat(SYS, f"{q}\nShow your work in <think> </think> tags, and return the answer in <answer> </answer>. For example <answer> [1, 2, 3] </answer>."),   # list_functions.py:37
    ("self_reference", "baseline"): lambda q: chat(SYS, f"{q}\nReturn the answer in <answer> </answer>. For example <answer> 5 </answer>."),   # self_reference.py:41
}
GEOMETRY = {   # advanced_geometry.py:48-63
    "incircle_radius": "Round the radius to 3 decimal places and return it in <answer> </answer> tags, for example <answer> 2.176 </answer>.",
    "orthocenter": "Round the coordinates to 3 decimal places and return them inside parenthesis in <answer> </answer>, for example <answer> (0.304, 1.217) </answer>.",
    "angle_measure": "Round the angle degrees to 2 decimal places, append a degree symbol, and return it in <answer> </answer> tags, for example <answer> 17.10\u00b0 </answer>.",
}


@pytest.mark.parametrize("name, template", sorted(AUTHORS))
def test_prompts_are_the_authors_strings(name, template):
    task = get_task(name)
    for p in task.generate(3, 2, cfg(name)["params"]["paper"]):
        prompt = task.prompt(p, template)
        assert prompt.text == AUTHORS[name, template](p.question)
        assert prompt.text.endswith(prompt.prefill) and prompt.prefill.endswith(PRE)


def test_geometry_prompts_are_the_authors_strings():
    task = get_task("advanced_geometry")
    seen = set()
    for p in task.generate(12, 2, cfg("advanced_geometry")["params"]["paper"]):
        tt = p.ground_truth["task_type"]
        seen.add(tt)
        assert task.prompt(p, "qwen-instruct").text == chat(SYS_S, f"{p.question} Show your work in <think> </think> tags. {GEOMETRY[tt]}")
        assert task.prompt(p, "baseline").text == chat(SYS_S, f"{p.question} {GEOMETRY[tt]}", "Let me solve this step by step.")
        assert task.prompt(p, "base").text == BASE + f"User: {p.question} Show your work in <think> </think> tags. {GEOMETRY[tt]}\nAssistant: {PRE}"
    assert seen == set(GEOMETRY)
