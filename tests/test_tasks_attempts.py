"""Attempts without search (`Task.attempt`) and the pretraining corpus (`build_attempts`): every
task's attempts are well-formed, backtrack-free, seeded, varied, honest about their verdict, as
short as a k=0 trace, correct at a rate strictly between 0 and 1 (backtrack tasks); the corpus is
the same bytes for any number of workers and resumes after a kill."""

from __future__ import annotations

import functools
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from killing import kill_after_chunks
from reasoning360.sweep.grid import CONFIGS
from reasoning360.tasks import (TaskError, build_attempts, build_data, build_traces, count_backtracks, get_task,
                                load_rows, score)
from reasoning360.tasks import data as data_mod
from reasoning360.tasks.prompts import continuation

STUDY = ["countdown", "sudoku", "arc_1d", "advanced_geometry", "knights_knaves", "color_cube_rotation",
         "list_functions", "zebra_puzzles", "self_reference", "gsm_symbolic"]
BACKTRACK = STUDY[:5]
MAX_LEN = yaml.safe_load((CONFIGS / "sft" / "default.yaml").read_text())["max_len"]
ROOT = Path(__file__).resolve().parents[1]
RATE_PROBLEMS = 200          # backtrack tasks: enough for a rate strictly between 0 and 1
RL_PROBLEMS = 60
SLACK = 32                   # an attempt is at most this many characters longer than the k=0 trace
RL_ATTEMPT_CHARS = 128       # RL-only tasks have no trace: an attempt stays short
# What a failed check looks like in a compact attempt's <think>, where the check decides the reward.
FAILED = {"countdown": "!=", "sudoku": "!", "knights_knaves": "!"}


def params(name: str) -> dict:
    return yaml.safe_load((CONFIGS / "task" / f"{name}.yaml").read_text())["params"]["cpu"]


@functools.lru_cache(maxsize=None)
def problems(name: str):
    """The problems a scale=cpu corpus is made of: the SFT split's (RL-only: the train split's)."""
    task = get_task(name)
    split = "sft" if task.backtrack_sft else "train"
    n = RATE_PROBLEMS if task.backtrack_sft else RL_PROBLEMS
    return task.generate(n, 17, task.split_params(params(name), split))


def think(text: str) -> str:
    return text.split("</think>")[0]


@pytest.mark.parametrize("name", STUDY)
def test_attempts_are_well_formed_backtrack_free_seeded_and_varied(name):
    task = get_task(name)
    ps = problems(name)
    qwen = None
    varied = 0
    for i, p in enumerate(ps):
        texts = [task.attempt(p, "compact", random.Random(f"{i}:{s}")) for s in range(4)]
        assert texts[0] == task.attempt(p, "compact", random.Random(f"{i}:0"))        # seeded
        varied += len(set(texts)) > 1
        for text in texts:
            assert text.isascii() and text.startswith("<think>") and text.endswith("</answer>")
            assert "</think>\n<answer>" in text            # the compact trace's ending
            assert score(name, text, p.ground_truth) in (0.1, 1.0), text
            assert count_backtracks(name, text) == 0 and "^" not in text, text
        # paper: continues the qwen-instruct prompt's prefilled <think>
        qwen = task.prompt(p, "qwen-instruct")
        paper = task.attempt(p, "paper", random.Random(i))
        assert paper == task.attempt(p, "paper", random.Random(i))
        assert "</think>\n\n<answer>" in paper and count_backtracks(name, paper) == 0, paper
        assert score(name, continuation(qwen.prefill, paper), p.ground_truth, prefill=qwen.prefill) in (0.1, 1.0)
    assert varied >= len(ps) // 2, (name, varied)         # the draw matters for most problems
    assert len({task.attempt(p, "compact", random.Random(i)) for i, p in enumerate(ps)}) > 1
    with pytest.raises(TaskError, match="style"):
        task.attempt(ps[0], "verbose", random.Random(0))


@pytest.mark.parametrize("name", BACKTRACK)
def test_backtrack_task_attempts_are_right_at_a_natural_rate_and_say_so(name, capsys):
    """Right only when the draw happens to be: a rate strictly between 0 and 1. Where the check
    decides (countdown: the target; sudoku: a full grid of candidates is the unique solution;
    knights_knaves: the unique consistent assignment) the verdict is the reward; an arc_1d rule
    or a geometry computation may fail its check yet give the right answer, or pass and not."""
    task = get_task(name)
    ps = problems(name)
    right = 0
    for i, p in enumerate(ps):
        text = task.attempt(p, "compact", random.Random(i))
        ok = score(name, text, p.ground_truth) == 1.0
        right += ok
        if name in ("countdown", "sudoku", "knights_knaves"):
            assert ok == (FAILED[name] not in think(text)), text
        paper = task.attempt(p, "paper", random.Random(i))          # the same draw, in words
        assert score(name, paper, p.ground_truth) == score(name, text, p.ground_truth)
    with capsys.disabled():
        print(f"\n  {name}: {right}/{len(ps)} attempts right ({right / len(ps):.1%})")
    assert 0 < right < len(ps)


@pytest.mark.parametrize("name", STUDY)
def test_attempts_fit_the_tiny_model_like_a_k0_trace(name):
    """A compact attempt is at most SLACK characters longer than the problem's k=0 trace, and
    prompt + attempt fits sft.max_len (characters >= tokens of the char tokenizer). RL-only tasks
    have no trace: their attempts stay under RL_ATTEMPT_CHARS (their prompts alone may exceed
    max_len: zebra_puzzles, self_reference and gsm_symbolic questions are long)."""
    task = get_task(name)
    for i, p in enumerate(problems(name)):
        text = task.attempt(p, "compact", random.Random(i))
        if task.backtrack_sft:
            k0 = task.trace(p, 0, "compact", random.Random(i))
            assert len(text) <= len(k0) + SLACK, (text, k0)
            assert len(task.prompt(p, "compact").text) + len(text) <= MAX_LEN
        else:
            assert len(text) <= RL_ATTEMPT_CHARS, text


# ---------------------------------------------------------------- build_attempts

def dspec(name: str = "countdown", sft: int = 30, train: int = 12, **kw) -> dict:
    return {"kind": "data", "task": name, "params": params(name),
            "sizes": {"sft": sft, "train": train, "val": 2, "test": 4}, "template": "compact", "seed": 1, **kw}


def pspec(**kw) -> dict:
    return {"kind": "pretrain", "task": "countdown", "data": "x", "split": "sft", "attempts": 3,
            "style": "compact", "seed": 0, **kw}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corpus_rows_schema_and_summary(tmp_path):
    import pyarrow.parquet as pq

    build_data(dspec(), tmp_path / "d", show_progress=False)
    summary = build_attempts(pspec(), tmp_path / "d", tmp_path / "p", show_progress=False)
    src = load_rows(tmp_path / "d" / "sft_problems.parquet")
    rows = load_rows(tmp_path / "p" / "pretrain.parquet")
    assert len(rows) == 3 * len(src) == summary["rows"] == 90 and summary["problems"] == 30
    assert not (tmp_path / "p" / data_mod.PARTIAL).exists()
    build_traces({"kind": "traces", "task": "countdown", "data": "x", "k": 0, "style": "compact", "seed": 0},
                 tmp_path / "d", tmp_path / "t", show_progress=False)
    assert pq.read_schema(tmp_path / "p" / "pretrain.parquet") == pq.read_schema(tmp_path / "t" / "sft.parquet")
    scores = []
    for j, r in enumerate(rows):
        s = src[j // 3]
        assert r["prompt"] == s["prompt"] and r["reward_model"] == s["reward_model"]
        assert r["extra_info"] == {**s["extra_info"], "backtracks": 0}
        assert count_backtracks("countdown", r["response"]) == 0
        scores.append(score("countdown", r["response"], r["reward_model"]["ground_truth"]))
    assert min(scores) == 0.1 and summary["well_formed_share"] == 1.0
    assert summary["correct_share"] == round(scores.count(1.0) / len(scores), 4)
    # three attempts of one problem are three draws
    assert any(len({rows[3 * i + a]["response"] for a in range(3)}) > 1 for i in range(len(src)))
    other = build_attempts(pspec(seed=1), tmp_path / "d", tmp_path / "q", show_progress=False)
    assert other["rows"] == 90 and sha(tmp_path / "q" / "pretrain.parquet") != sha(tmp_path / "p" / "pretrain.parquet")


def test_rl_only_corpus_reads_the_train_split_and_prefilled_paper_attempts(tmp_path):
    """An RL-only task's data stage draws no SFT problems: its corpus is the train split; a
    qwen-instruct corpus holds paper attempts continuing the prefilled <think>."""
    build_data(dspec("zebra_puzzles", sft=0, train=10), tmp_path / "z", show_progress=False)
    with pytest.raises(TaskError, match="split=train"):
        build_attempts(pspec(task="zebra_puzzles"), tmp_path / "z", tmp_path / "zs", show_progress=False)
    out = build_attempts(pspec(task="zebra_puzzles", split="train", attempts=2), tmp_path / "z", tmp_path / "zp",
                         show_progress=False)
    assert out["rows"] == 20 and out["split"] == "train" and 0 < out["correct_share"] < 1
    build_data(dspec(sft=6, template="qwen-instruct"), tmp_path / "q", show_progress=False)
    with pytest.raises(TaskError, match="template"):
        build_attempts(pspec(), tmp_path / "q", tmp_path / "qc", show_progress=False)
    build_attempts(pspec(style="paper"), tmp_path / "q", tmp_path / "qp", show_progress=False)
    for r in load_rows(tmp_path / "qp" / "pretrain.parquet"):
        assert r["response"].startswith("Step 1: ") and "<think>" not in r["response"]
        assert score("countdown", r["response"], r["reward_model"]["ground_truth"]) in (0.1, 1.0)


def test_corpus_is_the_same_bytes_for_any_number_of_workers(tmp_path, monkeypatch):
    build_data(dspec(sft=50), tmp_path / "d", show_progress=False)
    monkeypatch.setattr(data_mod, "CHUNK", 8)
    build_attempts(pspec(), tmp_path / "d", tmp_path / "a", show_progress=False)
    monkeypatch.setattr(data_mod, "PARALLEL_MIN", 1)
    summary = build_attempts(pspec(), tmp_path / "d", tmp_path / "b", show_progress=False, workers=2)
    assert summary["workers"] == 2
    assert sha(tmp_path / "a" / "pretrain.parquet") == sha(tmp_path / "b" / "pretrain.parquet")


_KILLABLE = """
import sys, time
from reasoning360.tasks import data as D, get_task
D.CHUNK, D.PARALLEL_MIN = 5, 1
task = get_task("countdown")
slow = task.attempt
def attempt(*a, **k):
    time.sleep(0.02)
    return slow(*a, **k)
task.attempt = attempt
D.build_attempts({spec}, sys.argv[1], sys.argv[2], show_progress=False, workers=2)
"""


def test_killed_corpus_build_resumes_to_identical_bytes(tmp_path, monkeypatch):
    build_data(dspec(sft=50), tmp_path / "d", show_progress=False)
    monkeypatch.setattr(data_mod, "CHUNK", 5)
    build_attempts(pspec(), tmp_path / "d", tmp_path / "ref", show_progress=False)
    out = tmp_path / "killed"
    code = _KILLABLE.format(spec=repr(pspec()))
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d"), str(out)],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    kill_after_chunks(p, out / data_mod.PARTIAL, "attempts-*.json", 2)
    assert not (out / "pretrain.parquet").exists(), "killed too late: the final file exists"
    summary = build_attempts(pspec(), tmp_path / "d", out, show_progress=False)
    assert summary["chunks_reused"] >= 2
    assert sha(out / "pretrain.parquet") == sha(tmp_path / "ref" / "pretrain.parquet")
    assert not (out / data_mod.PARTIAL).exists()


@pytest.mark.parametrize("bad, match", [
    ({"kind": "traces"}, "kind='pretrain'"),
    ({"attempts": 0}, "attempts"),
    ({"attempts": True}, "attempts"),
    ({"split": "test"}, "split"),
    ({"style": "verbose"}, "style"),
    ({"seed": "0"}, "seed"),
    ({"task": "chess"}, "unknown task"),
])
def test_bad_pretrain_specs_fail_in_one_line_before_writing(tmp_path, bad, match):
    with pytest.raises(TaskError, match=match) as e:
        build_attempts(pspec(**bad), tmp_path / "nothing", tmp_path / "out", show_progress=False)
    assert "\n" not in str(e.value)
    spec = pspec()
    del spec["attempts"]
    with pytest.raises(TaskError, match="missing key 'attempts'"):
        build_attempts(spec, tmp_path / "nothing", tmp_path / "out", show_progress=False)
    with pytest.raises(TaskError, match="build the data stage first"):
        build_attempts(pspec(), tmp_path / "nothing", tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_r360_data_writes_the_corpus_with_attempts(tmp_path, capsys):
    from reasoning360.cli import main

    small = ["--train_size", "6", "--val_size", "1", "--test_size", "2", "--quiet"]
    assert main(["data", "knights_knaves", "--sft_size", "10", *small, "--attempts", "2",
                 "--local_dir", str(tmp_path / "k")]) == 0
    assert "pretrain.parquet  20 attempts (2 per sft problem)" in capsys.readouterr().out
    assert len(load_rows(tmp_path / "k" / "pretrain.parquet")) == 20
    assert main(["data", "color_cube_rotation", *small, "--attempts", "1", "--local_dir", str(tmp_path / "c")]) == 0
    assert "6 attempts (1 per train problem)" in capsys.readouterr().out
    assert main(["data", "countdown", "--attempts", "0", "--local_dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("r360 data: --attempts:") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
