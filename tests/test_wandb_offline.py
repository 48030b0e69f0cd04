"""wandb tracking (tracking.wandb=true): a stage logs its metrics and config, offline, to a run
named by point and grouped by sweep, in a wandb dir under the stage dir. The test reads the
offline `.wandb` file back (its LevelDB-log record format, parsed here with wandb's protobuf
Record) and checks the run's name, group, config and logged keys.

The tracker runs in a subprocess, as a stage does in a job, so wandb's service and hooks
stay out of the test process.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

BLOCK = 32768
HEADER = 7   # checksum (4) + length (2) + type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path):
    """The protobuf Records of an offline run file (`run-<id>.wandb`)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, (ident, magic, version)
    pos, buf = 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:           # block trailer: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            raw = chunk
        elif kind == FIRST:
            buf = chunk
            continue
        elif kind == MIDDLE:
            buf += chunk
            continue
        elif kind == LAST:
            raw, buf = buf + chunk, b""
        else:
            raise AssertionError(f"unknown record type {kind}")
        rec = pb.Record()
        rec.ParseFromString(raw)
        yield rec


def offline_run(stage_dir: Path) -> dict:
    files = sorted(stage_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no offline run under {stage_dir}/wandb"
    out = {"history": [], "config": {}, "run": None, "files": files}
    for f in files:
        for rec in read_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["run"] = rec.run
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "config":
                out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
            elif kind == "history":
                out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                       for i in rec.history.item})
    return out


SCRIPT = textwrap.dedent("""
    import sys
    from reasoning360.tracking import Tracker
    stage_dir, resume = sys.argv[1], int(sys.argv[2])
    spec = {"kind": "rl", "task": "countdown", "rl": {"lr": 1e-4, "kl_coef": 0.0}, "seed": 0}
    # exactly what reasoning360.sweep.runner passes
    t = Tracker(stage_dir, resume_step=resume, wandb_cfg={"wandb": True, "wandb_project": "r360-test",
                "wandb_mode": "offline"}, run_name="countdown-k1-s0/rl", group="smoke",
                config={"spec": spec, "stage_id": "rl-countdown-abc"})
    for step in range(resume + 1, resume + 4):
        t.log(step, reward_mean=0.1 * step, response_length_mean=40.0 + step, backtracks_mean=0.5,
              **{"val/accuracy": 0.25})
    t.close(finished=True)
""")


def run_tracker(stage_dir: Path, resume: int = 0) -> None:
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_MODE", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(stage_dir), str(resume)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_offline_run_holds_metrics_and_config(tmp_path):
    stage = tmp_path / "rl-countdown-abc"
    stage.mkdir()
    run_tracker(stage)
    run = offline_run(stage)
    assert run["run"].display_name == "countdown-k1-s0/rl"
    assert run["run"].run_group == "smoke"
    assert run["run"].project == "r360-test"
    assert run["run"].run_id == "rl-countdown-abc"
    assert run["config"]["stage_id"] == "rl-countdown-abc"
    assert run["config"]["spec"]["rl"] == {"lr": 1e-4, "kl_coef": 0.0}
    hist = run["history"]
    assert [h["_step"] for h in hist] == [1, 2, 3]
    for h in hist:
        assert {"reward_mean", "response_length_mean", "backtracks_mean", "val/accuracy"} <= set(h)
        assert "step" not in h and "time" not in h
    assert [h["reward_mean"] for h in hist] == pytest.approx([0.1, 0.2, 0.3])
    # the same rows are in metrics.jsonl and, the stage finished, metrics.parquet
    import pandas as pd

    df = pd.read_parquet(stage / "metrics.parquet")
    assert list(df["step"]) == [1, 2, 3] and list(df["reward_mean"]) == pytest.approx([0.1, 0.2, 0.3])


def test_resumed_stage_continues_the_same_run(tmp_path):
    stage = tmp_path / "rl-countdown-abc"
    stage.mkdir()
    run_tracker(stage)
    run_tracker(stage, resume=2)         # killed after its checkpoint at step 2, rerun
    run = offline_run(stage)
    assert len(run["files"]) == 2
    assert all(f.name == "run-rl-countdown-abc.wandb" for f in run["files"])
    steps = [h["_step"] for h in run["history"]]
    assert steps[-3:] == [3, 4, 5]
    import pandas as pd

    assert list(pd.read_parquet(stage / "metrics.parquet")["step"]) == [1, 2, 3, 4, 5]
