"""Dataset builders end to end: schema, split disjointness, determinism, parallel == serial."""

from __future__ import annotations

import hashlib
import json

import pytest

from reasoning360.tasks import TaskError, build_data, build_traces, get_task, load_rows, score
from reasoning360.tasks import data as data_mod

CPU = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=20, min_target=10, max_target=100)
SIZES = {"sft": 80, "train": 40, "val": 10, "test": 30}
FILES = {"sft": "sft_problems", "train": "train", "val": "val", "test": "test"}


def spec(**kw):
    return {"kind": "data", "task": "countdown", "params": CPU, "sizes": dict(SIZES),
            "template": "compact", "seed": 0, **kw}


def keys_of(rows):
    task = get_task("countdown")
    return [task.key(data_mod.problem_from_row(r)) for r in rows]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_end_to_end_schema_and_disjoint_splits(tmp_path):
    summary = build_data(spec(), tmp_path / "d", show_progress=False)
    assert summary["counts"] == {"test": 30, "val": 10, "train": 40, "sft": 80}
    rows = {s: load_rows(tmp_path / "d" / f"{f}.parquet") for s, f in FILES.items()}
    for split, rs in rows.items():
        assert len(rs) == SIZES[split]
        for i, r in enumerate(rs):
            assert set(r) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
            assert r["data_source"] == "countdown" and r["ability"] == "reasoning"
            assert r["reward_model"]["style"] == "rule"
            gt = json.loads(r["reward_model"]["ground_truth"])
            assert set(gt) == {"numbers", "target"}
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

    out = build_traces({"kind": "traces", "task": "countdown", "data": "x", "k": 1,
                        "style": "compact", "seed": 0}, tmp_path / "d", tmp_path / "t",
                       show_progress=False)
    assert out["rows"] == 80
    sft = load_rows(tmp_path / "t" / "sft.parquet")
    assert len(sft) == 80
    for before, after in zip(rows["sft"], sft):
        assert after["extra_info"]["backtracks"] == 1
        assert after["prompt"] == before["prompt"] and after["reward_model"] == before["reward_model"]
        assert score("countdown", after["response"], after["reward_model"]["ground_truth"]) == 1.0
        assert after["response"].count("^") == 1


def test_build_data_deterministic_and_parallel_equals_serial(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "CHUNK", 40)          # several chunks per split
    s = spec(seed=5, sizes={"sft": 130, "train": 50, "val": 5, "test": 30})
    build_data(s, tmp_path / "a", show_progress=False)
    build_data(s, tmp_path / "b", show_progress=False)
    monkeypatch.setattr(data_mod, "PARALLEL_MIN", 1)   # the same spec through the process pool
    build_data(s, tmp_path / "c", show_progress=False)
    for f in FILES.values():
        h = {sha(tmp_path / d / f"{f}.parquet") for d in "abc"}
        assert len(h) == 1, f
    other = spec(seed=6, sizes={"sft": 1, "train": 1, "val": 1, "test": 30})
    build_data(other, tmp_path / "o", show_progress=False)
    assert sha(tmp_path / "o" / "test.parquet") != sha(tmp_path / "a" / "test.parquet")


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
    roles = [m["role"] for m in r["prompt"]]
    assert roles == (["system", "user"] if template == "qwen-instruct" else ["user"])
    gt = json.loads(r["reward_model"]["ground_truth"])
    text = r["prompt"][-1]["content"]
    assert str(gt["target"]) in text and "<answer>" in text


def test_bad_specs(tmp_path):
    with pytest.raises(TaskError, match="template"):
        build_data(spec(template="chatml"), tmp_path, show_progress=False)
    with pytest.raises(TaskError, match="sizes.train"):
        build_data(spec(sizes={"sft": 1, "train": -1, "val": 1, "test": 1}), tmp_path, show_progress=False)
    with pytest.raises(TaskError, match="unknown task"):
        build_data(spec(task="nope"), tmp_path, show_progress=False)
    with pytest.raises(TaskError, match="sft_problems"):
        build_traces({"kind": "traces", "task": "countdown", "data": "x", "k": 1, "style": "compact",
                      "seed": 0}, tmp_path / "missing", tmp_path / "t", show_progress=False)
