"""One answer to "what state is this stage in" (issue #12): `r360 status` (launchers/status),
the results table (sweep/results.py) and the analysis loader (analysis.load_sweep) all read
StageDir.state, so they agree in every state. A real SFT stage, run by the process every
launcher runs (`python -m reasoning360.sweep.runner STORE ID`), is taken through each state in
turn and the three readers are asked each time:

    not started   recorded, never run
    running       a live runner holds the stage lock (paused with SIGSTOP while we look)
    interrupted   preempted (USR2: checkpoint at the next step, exit 3)
    interrupted   killed (SIGKILL mid-run: started, never ended)
    failed        its input vanished (the runner wrote FAILED with the traceback)
    done          resumed from its checkpoint and finished

Real processes throughout; nothing is mocked. ~1-2 min on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from analysis import load_sweep
from fixtures_smoke import REPO
from reasoning360.launchers import status
from reasoning360.sweep import main as sweep_main, results, sweepdir
from reasoning360.sweep.compose import compose
from reasoning360.tracking import last_step

STEPS = 40
OVERRIDES = ["+grid=smoke", "grid.backtracks=[0]", "sweep.name=states", "data.sft_size=64", "data.train_size=8",
             "data.val_size=4", "data.test_size=8", f"sft.max_steps={STEPS}", "sft.batch_size=8", "sft.save_every=5",
             "pretrain.train.max_steps=0"]


def runner(store: Path, sid: str) -> subprocess.Popen:
    """The stage's own process, as the local pool and Slurm jobs start it."""
    return subprocess.Popen([sys.executable, "-m", "reasoning360.sweep.runner", str(store), sid, "--threads", "1"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(sd: Path, proc: subprocess.Popen, above: int, timeout: float = 240) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        step = last_step(sd)
        if step is not None and step > above:
            return step
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no step above {above} in {timeout}s")


def three_readers(sweep: Path, sid: str) -> dict[str, str]:
    """What each reader says of the stage: `r360 status --json` (its own process), the
    results table's state column, and the analysis loader's stages table."""
    out = subprocess.run([sys.executable, "-m", "reasoning360.cli", "status", str(sweep), "--json"],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    rows = [r for r in json.loads(out.stdout)["rows"] if r["stage_id"] == sid]
    assert len(rows) == 1
    cli = f"{rows[0]['state']} ({rows[0]['reason']})" if rows[0]["reason"] else rows[0]["state"]
    snap = next(r for r in status.snapshot(sweep).rows if r.stage_id == sid)     # the same, in-process
    assert snap.label == cli
    plan, store = sweepdir.load_plan(sweep)
    table = results.rows(plan, store)
    assert len(table) == 1
    loaded = load_sweep(sweep)
    st = loaded.stages[loaded.stages.stage_id == sid]
    assert len(st) == 1
    return {"status": cli, "results": table[0]["state"], "analysis": str(st.state.iloc[0]),
            "analysis_point": str(loaded.points.state.iloc[0])}


def check(sweep: Path, sid: str, state: str, detail: str = "") -> dict[str, str]:
    label = f"{state} ({detail})" if detail else state
    got = three_readers(sweep, sid)
    assert got["status"] == label, got
    assert got["results"] == f"{label}: sft", got          # the point's first unfinished stage: this one
    assert got["analysis"] == state, got
    assert got["analysis_point"] == state, got
    return got


def test_every_reader_agrees_in_every_state(tmp_path, monkeypatch):
    monkeypatch.setenv("R360_ROOT", str(tmp_path))
    c, plan, store, sweep = sweep_main.build(compose(OVERRIDES))
    sweep_main.record(c, plan, store, sweep)
    roles = plan.points[0].stages
    for role in ("data", "traces"):
        p = runner(store.root, roles[role])
        assert p.wait(timeout=300) == 0, p.communicate()[0][-3000:]
    sid = roles["sft"]
    sd = store.stage(sid).path

    check(sweep, sid, "not started")

    # running: a live runner holds the lock (paused while the readers look, so it cannot finish)
    p = runner(store.root, sid)
    wait_for_step(sd, p, 0)
    p.send_signal(signal.SIGSTOP)
    check(sweep, sid, "running")

    # preempted: USR2 -> checkpoint at the next step boundary, exit 3
    p.send_signal(signal.SIGUSR2)
    p.send_signal(signal.SIGCONT)
    assert p.wait(timeout=120) == 3, p.communicate()[0][-3000:]
    preempted_at = last_step(sd)
    check(sweep, sid, "interrupted", "preempted")

    # killed: SIGKILL mid-run, after it resumed and went on
    p = runner(store.root, sid)
    wait_for_step(sd, p, preempted_at)
    p.kill()
    p.wait()
    killed = check(sweep, sid, "interrupted", "killed")
    assert "killed" in killed["status"] and "killed" in killed["results"]

    # failed: its input vanished; the runner records the traceback in FAILED
    traces = store.stage(roles["traces"]).path / "sft.parquet"
    traces.rename(traces.with_name("moved.parquet"))
    p = runner(store.root, sid)
    assert p.wait(timeout=120) == 1
    got = three_readers(sweep, sid)
    assert got["status"].startswith("failed (FileNotFoundError") and "sft.parquet" in got["status"], got
    assert got["results"] == f"{got['status']}: sft"
    assert got["analysis"] == got["analysis_point"] == "failed"
    assert "sft failed (FileNotFoundError" in load_sweep(sweep).missing[0]

    # done: the input is back; the stage resumes from its checkpoint and finishes
    traces.with_name("moved.parquet").rename(traces)
    p = runner(store.root, sid)
    assert p.wait(timeout=300) == 0, p.communicate()[0][-3000:]
    assert last_step(sd) == STEPS
    got = three_readers(sweep, sid)
    assert got["status"] == got["analysis"] == "done", got
    assert got["results"] == "not started: sft_eval"         # the point's next stage
    assert [a["status"] for a in store.stage(sid).attempts()] == ["preempted", "running", "failed", "done"]
