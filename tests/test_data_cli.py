"""`r360 data`: the paper's generator interface writes verl-schema parquet, reproducibly, and
rejects bad input in one line naming the flag."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from reasoning360.cli import main
from reasoning360.tasks import count_backtracks, load_rows, score

SMALL = ["--sft_size", "12", "--train_size", "6", "--val_size", "2", "--test_size", "4"]


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("task, k, style, template", [
    ("sudoku", 3, "compact", "compact"),
    ("arc_1d", 2, "paper", "qwen-instruct"),
    ("advanced_geometry", 1, "paper", "base"),
    ("knights_knaves", 3, "paper", "baseline"),
    ("countdown", 1, "compact", "compact"),
])
def test_builds_every_split_and_traces(task, k, style, template, tmp_path, capsys):
    out = tmp_path / "d"
    argv = ["data", task, "--backtracks", str(k), *SMALL, "--template_type", template,
            "--trace_style", style, "--seed", "4", "--local_dir", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sft.parquet" in printed and f"k={k}" in printed
    for split, n in (("train", 6), ("val", 2), ("test", 4), ("sft_problems", 12)):
        rows = load_rows(out / f"{split}.parquet")
        assert len(rows) == n and all(r["data_source"] == task for r in rows)
        assert [m["role"] for m in rows[0]["prompt"]] == ["user"]        # one message: the whole prompt
    sft = load_rows(out / "sft.parquet")
    assert len(sft) == 12
    for r in sft:
        assert r["extra_info"]["backtracks"] == k and count_backtracks(task, r["response"]) == k
        assert score(task, r["response"], r["reward_model"]["ground_truth"]) == 1.0
    again = tmp_path / "again"
    assert main([*argv[:-2], str(again), "--quiet"]) == 0
    for f in ("train", "val", "test", "sft_problems", "sft"):
        assert sha(out / f"{f}.parquet") == sha(again / f"{f}.parquet"), f


def test_rl_only_task_has_no_traces(tmp_path):
    out = tmp_path / "z"
    assert main(["data", "color_cube_rotation", "--train_size", "5", "--val_size", "1", "--test_size", "2",
                 "--local_dir", str(out), "--quiet"]) == 0
    assert len(load_rows(out / "train.parquet")) == 5 and not (out / "sft.parquet").exists()


@pytest.mark.parametrize("argv, flag", [
    (["data", "sudoku", "--backtracks", "4"], "--backtracks"),          # cpu 4x4: max_k = 3
    (["data", "sudoku", "--backtracks", "-1"], "--backtracks"),
    (["data", "zebra_puzzles", "--backtracks", "1"], "--backtracks"),   # RL-only
    (["data", "sudoku", "--template_type", "chatml"], "--template_type"),
    (["data", "sudoku", "--trace_style", "verbose"], "--trace_style"),
    (["data", "sudoku", "--scale", "huge"], "--scale"),
    (["data", "sudoku", "--sft_size", "-3"], "--sft_size"),
    (["data", "sudoku", "--train_size", "many"], "--train_size"),
    (["data", "sudoku", "--sft-size", "3"], "--sft-size"),
    (["data", "sudoku", "--param", "grid=5"], "--param"),
    (["data", "sudoku", "--param", "min_emty=3"], "--param"),
    (["data", "sudoku", "--param", "grid"], "--param"),
    (["data", "sudokuu"], "TASK"),
    (["data", "sudoku", "--template_type", "qwen-instruct", "--trace_style", "compact"], "--trace_style"),
    (["data", "sudoku", "--workers", "0"], "--workers"),
])
def test_bad_input_is_one_line_naming_the_flag(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        rc = main([*argv, "--local_dir", str(tmp_path / "x")])
        raise SystemExit(rc)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and flag in err and err.startswith("r360 data: "), err
    assert not (tmp_path / "x").exists()


def test_console_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reasoning360.cli", "data", "knights_knaves", "--backtracks",
                           "1", *SMALL, "--local_dir", str(tmp_path / "kk")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "kk" / "sft.parquet").exists()
