"""Dataset builders end to end: schema, the prompt/prefill contract, split disjointness, per-split
filters, determinism, N workers == 1 worker, and resuming after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from killing import kill_after_chunks
from reasoning360.tasks import TaskError, build_data, build_traces, get_task, load_rows, score
from reasoning360.tasks import data as data_mod

CPU = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=20, min_target=10, max_target=100,
           rl_problem_set="reasoning_gym")
SIZES = {"sft": 80, "train": 40, "val": 10, "test": 30}
FILES = {"sft": "sft_problems", "train": "train", "val": "val", "test": "test"}
ROOT = Path(__file__).resolve().parents[1]


def spec(**kw):
    return {"kind": "data", "task": "countdown", "params": CPU, "sizes": dict(SIZES),
            "template": "compact", "seed": 0, **kw}


def tspec(**kw):
    return {"kind": "traces", "task": "countdown", "data": "x", "k": 1, "style": "compact", "seed": 0, **kw}


def keys_of(rows):
    task = get_task("countdown")
    return [task.key(data_mod.problem_from_row(r)) for r in rows]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_end_to_end_schema_and_disjoint_splits(tmp_path):
    summary = build_data(spec(), tmp_path / "d", show_progress=False)
    assert summary["counts"] == {"test": 30, "val": 10, "train": 40, "sft": 80}
    assert not (tmp_path / "d" / data_mod.PARTIAL).exists()         # cleaned up once final
    rows = {s: load_rows(tmp_path / "d" / f"{f}.parquet") for s, f in FILES.items()}
    for split, rs in rows.items():
        assert len(rs) == SIZES[split]
        for i, r in enumerate(rs):
            assert set(r) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
            assert r["data_source"] == "countdown" and r["ability"] == "reasoning"
            assert r["reward_model"]["style"] == "rule"
            gt = json.loads(r["reward_model"]["ground_truth"])
            assert set(gt) == {"numbers", "target", "prefill"} and gt["prefill"] == ""
            assert set(r["extra_info"]) == {"split", "index", "question", "answer", "metadata"}
            assert r["extra_info"]["split"] == split and r["extra_info"]["index"] == i
            assert isinstance(json.loads(r["extra_info"]["metadata"]), dict)
            assert r["prompt"] == [{"role": "user", "content": " ".join(map(str, gt["numbers"]))
                                    + f">{gt['target']}\n"}]
            # the canonical answer is correct
            ans = f"<think>x</think>\n<answer>{r['extra_info']['answer']}</answer>"
            assert score("countdown", ans, r["reward_model"]["ground_truth"]) == 1.0
    keys = {s: keys_of(rs) for s, rs in rows.items()}
    for s in keys:
        assert len(set(keys[s])) == len(keys[s])
    test = set(keys["test"])
    assert not test & set(keys["sft"]) and not test & set(keys["train"]) and not test & set(keys["val"])
    assert not set(keys["val"]) & (set(keys["train"]) | set(keys["sft"]))
    assert not set(keys["train"]) & set(keys["sft"])

    out = build_traces(tspec(), tmp_path / "d", tmp_path / "t", show_progress=False)
    assert out["rows"] == 80
    sft = load_rows(tmp_path / "t" / "sft.parquet")
    assert len(sft) == 80
    for before, after in zip(rows["sft"], sft):
        assert after["extra_info"]["backtracks"] == 1
        assert after["prompt"] == before["prompt"] and after["reward_model"] == before["reward_model"]
        assert score("countdown", after["response"], after["reward_model"]["ground_truth"]) == 1.0
        assert after["response"].count("^") == 1


def test_prefilled_prompts_store_text_and_prefill_and_traces_continue_them(tmp_path):
    """qwen-instruct: the prompt is one message holding the raw ChatML text ending in the
    prefill; the ground truth holds the prefill; the SFT response continues after the prefilled
    <think> and scores 1.0 through the ground truth alone."""
    build_data(spec(template="qwen-instruct", sizes={"sft": 6, "train": 3, "val": 1, "test": 2}),
               tmp_path / "d", show_progress=False)
    build_traces(tspec(style="paper", k=2), tmp_path / "d", tmp_path / "t", show_progress=False)
    for r in load_rows(tmp_path / "t" / "sft.parquet"):
        text = r["prompt"][0]["content"]
        gt = json.loads(r["reward_model"]["ground_truth"])
        assert len(r["prompt"]) == 1 and r["prompt"][0]["role"] == "user"
        assert text.startswith("<|im_start|>system\n") and text.endswith(gt["prefill"])
        assert gt["prefill"] == "<|im_start|>assistant\nLet me solve this step by step.\n<think>"
        assert r["response"].startswith("Step 1: ") and "<think>" not in r["response"]
        assert score("countdown", r["response"], r["reward_model"]["ground_truth"]) == 1.0
        assert score("countdown", r["response"], r["reward_model"]["ground_truth"], prefill="") == 0.0
        assert score("countdown", "<think>" + r["response"], gt | {"prefill": ""}) == 1.0


def test_build_data_deterministic_and_workers_equal_serial(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "CHUNK", 40)          # several chunks per split
    s = spec(seed=5, sizes={"sft": 130, "train": 50, "val": 5, "test": 30})
    build_data(s, tmp_path / "a", show_progress=False)
    build_data(s, tmp_path / "b", show_progress=False)
    monkeypatch.setattr(data_mod, "PARALLEL_MIN", 1)   # the same spec through a pool of 2 and 3
    build_data(s, tmp_path / "c", show_progress=False, workers=2)
    build_data(s, tmp_path / "e", show_progress=False, workers=3)
    for f in FILES.values():
        h = {sha(tmp_path / d / f"{f}.parquet") for d in "abce"}
        assert len(h) == 1, f
    build_traces(tspec(k=2), tmp_path / "a", tmp_path / "ta", show_progress=False)
    build_traces(tspec(k=2), tmp_path / "a", tmp_path / "tb", show_progress=False, workers=2)
    assert sha(tmp_path / "ta" / "sft.parquet") == sha(tmp_path / "tb" / "sft.parquet")
    other = spec(seed=6, sizes={"sft": 1, "train": 1, "val": 1, "test": 30})
    build_data(other, tmp_path / "o", show_progress=False)
    assert sha(tmp_path / "o" / "test.parquet") != sha(tmp_path / "a" / "test.parquet")
    with pytest.raises(TaskError, match="workers"):
        build_data(s, tmp_path / "w", show_progress=False, workers=0)


_KILLABLE = """
import sys, time
from reasoning360.tasks import data as D, get_task
D.CHUNK, D.PARALLEL_MIN = 20, 1
kind, out = sys.argv[1], sys.argv[2]
task = get_task("countdown")
slow_gen, slow_trace = task.generate, task.trace
def generate(*a, **k):
    time.sleep(0.25)
    return slow_gen(*a, **k)
def trace(*a, **k):
    time.sleep(0.01)
    return slow_trace(*a, **k)
task.generate, task.trace = generate, trace
spec = {json}
if kind == "data":
    D.build_data(spec, out, show_progress=False, workers=2)
else:
    D.build_traces({{"kind": "traces", "task": "countdown", "data": "x", "k": 2, "style": "paper",
                    "seed": 3}}, sys.argv[3], out, show_progress=False, workers=2)
"""


def _kill_midway(kind: str, out: Path, data: Path | None, spec_: dict, min_files: int) -> None:
    """Run a slowed build in a fresh process group and SIGKILL it once `min_files` chunks are
    done and before any final file exists."""
    code = _KILLABLE.format(json=json.dumps(spec_))
    argv = [sys.executable, "-c", code, kind, str(out)] + ([str(data)] if data else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(argv, env=env, start_new_session=True)
    kill_after_chunks(p, out / data_mod.PARTIAL, "*.json", min_files)
    assert not list(out.glob("*.parquet")), "killed too late: a final file exists"


def test_killed_builds_resume_to_identical_bytes(tmp_path, monkeypatch):
    s = spec(seed=3, sizes={"sft": 100, "train": 60, "val": 20, "test": 40})
    monkeypatch.setattr(data_mod, "CHUNK", 20)
    ref = tmp_path / "ref"
    build_data(s, ref, show_progress=False)
    build_traces(tspec(k=2, style="paper", seed=3), ref, ref, show_progress=False)

    # data: kill after 3 chunks, resume (serially, no slow-down): same bytes, chunks reused
    out = tmp_path / "killed"
    _kill_midway("data", out, None, s, min_files=3)
    summary = build_data(s, out, show_progress=False)
    assert summary["chunks_reused"] >= 3
    for f in FILES.values():
        assert sha(out / f"{f}.parquet") == sha(ref / f"{f}.parquet"), f
    assert not (out / data_mod.PARTIAL).exists()

    # traces: the same for the SFT traces
    tout = tmp_path / "traces"
    _kill_midway("traces", tout, ref, s, min_files=2)
    summary = build_traces(tspec(k=2, style="paper", seed=3), ref, tout, show_progress=False, workers=2)
    assert summary["chunks_reused"] >= 2
    assert sha(tout / "sft.parquet") == sha(ref / "sft.parquet")


def test_stale_chunks_of_another_spec_are_not_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "CHUNK", 20)
    out = tmp_path / "d"
    b = spec(seed=2, sizes={"sft": 20, "train": 0, "val": 0, "test": 20})
    build_data(b, tmp_path / "ref", show_progress=False)
    (out / data_mod.PARTIAL).mkdir(parents=True)
    # a finished chunk of spec `a` left behind in the same directory
    chunks = data_mod._Chunks(data_mod._gen_chunk, None, out / data_mod.PARTIAL, "data")
    args = ("countdown", 20, data_mod.derive_seed(1, "countdown", "test", 0),
            get_task("countdown").split_params(CPU, "test"))
    chunks.request(("test", 0), args)
    chunks.get(("test", 0))
    summary = build_data(b, out, show_progress=False)
    assert summary["chunks_reused"] == 0
    assert sha(out / "test.parquet") == sha(tmp_path / "ref" / "test.parquet")


def test_dead_end_filter_applies_only_to_filter_splits(tmp_path):
    """Only the SFT split of a paper-style spec is filtered by min_dead_ends; the test split is
    the generator's own distribution."""
    params = {"grid": 4, "min_empty": 10, "max_empty": 12, "min_dead_ends": 3, "filter_splits": ["sft"]}
    s = {"kind": "data", "task": "sudoku", "params": params, "template": "compact", "seed": 0,
         "sizes": {"sft": 40, "train": 0, "val": 0, "test": 60}}
    build_data(s, tmp_path / "p", show_progress=False)
    dead = {f: [json.loads(r["extra_info"]["metadata"])["dead_ends"]
                for r in load_rows(tmp_path / "p" / f"{f}.parquet")] for f in ("sft_problems", "test")}
    assert min(dead["sft_problems"]) >= 3
    assert min(dead["test"]) < 3                   # unfiltered: easier puzzles are in the test set
    everywhere = dict(params, filter_splits=["sft", "train", "val", "test"])
    build_data(dict(s, params=everywhere), tmp_path / "a", show_progress=False)
    test = [json.loads(r["extra_info"]["metadata"])["dead_ends"] for r in load_rows(tmp_path / "a" / "test.parquet")]
    assert min(test) >= 3
    with pytest.raises(TaskError, match="filter_splits"):
        build_data(dict(s, params=dict(params, filter_splits=["rl"])), tmp_path / "x", show_progress=False)


def test_short_split_is_refilled_and_exhaustion_raises(tmp_path, monkeypatch):
    # 3 numbers in 1..6: a small problem space, so duplicates force extra draws
    small = dict(CPU, max_value=6, min_target=10, max_target=40)
    s = build_data(spec(params=small, sizes={"sft": 30, "train": 20, "val": 10, "test": 20}),
                   tmp_path / "s", show_progress=False)
    assert s["counts"] == {"test": 20, "val": 10, "train": 20, "sft": 30}
    assert s["duplicates_dropped"] > 0 and s["drawn"] > 80
    monkeypatch.setattr(data_mod, "MAX_DRY_CHUNKS", 3)
    tiny = dict(CPU, max_value=2, min_target=1, max_target=8)
    with pytest.raises(TaskError, match="distinct problems"):
        build_data(spec(params=tiny, sizes={"sft": 60, "train": 0, "val": 0, "test": 10}),
                   tmp_path / "x", show_progress=False)
    assert not (tmp_path / "x" / "test.parquet").exists()


@pytest.mark.parametrize("template", ["base", "qwen-instruct", "baseline"])
def test_templates(tmp_path, template):
    build_data(spec(template=template, sizes={"sft": 2, "train": 2, "val": 1, "test": 1}),
               tmp_path, show_progress=False)
    r = load_rows(tmp_path / "train.parquet")[0]
    assert [m["role"] for m in r["prompt"]] == ["user"]
    gt = json.loads(r["reward_model"]["ground_truth"])
    text = r["prompt"][0]["content"]
    assert str(gt["target"]) in text and "<answer>" in text and text.endswith(gt["prefill"])
    assert gt["prefill"].endswith("Let me solve this step by step.\n<think>")
    assert ("<think> </think>" in text) == (template != "baseline")


def test_bad_specs(tmp_path):
    with pytest.raises(TaskError, match="template"):
        build_data(spec(template="chatml"), tmp_path, show_progress=False)
    with pytest.raises(TaskError, match="sizes.train"):
        build_data(spec(sizes={"sft": 1, "train": -1, "val": 1, "test": 1}), tmp_path, show_progress=False)
    with pytest.raises(TaskError, match="unknown task"):
        build_data(spec(task="nope"), tmp_path, show_progress=False)
    with pytest.raises(TaskError, match="sft_problems"):
        build_traces(tspec(), tmp_path / "missing", tmp_path / "t", show_progress=False)
