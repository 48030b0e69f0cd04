"""The job files against the real local Slurm cluster (tests/slurm_cluster.py): hostile but legal
values reach Slurm and the job exactly as written, a rendered submit.sh with a relative paths.root
runs from any directory, and the launcher submits exactly the files `r360 render` writes.

Each test cancels what it submitted."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from reasoning360.launchers.slurm import SlurmLauncher, query as slurm_query, submit
from reasoning360.launchers.slurm.jobs import JobsFile
from reasoning360.launchers.slurm.sbatch import log_path
from reasoning360.sweep import main
from reasoning360.sweep.store import Store

from compose import compose_cfg
from slurm_cluster import TINY, cancel_sweep, wait_for

pytestmark = pytest.mark.slurm
QUIET = Console(file=open(os.devnull, "w"))
NAME = "sw $(touch CANARY) `touch CANARY` ;&&*? 'q' \"d\" ü"


def test_hostile_values_reach_slurm_and_the_job_literally(slurm_cluster, tmp_path, monkeypatch):
    """Render with a relative paths.root and a sweep name, comment, env values and interpreter
    path full of shell syntax; run submit.sh from another directory; the data stage runs to DONE,
    Slurm holds the job name and comment as written, the job sees the env values literally."""
    canary = tmp_path / "CANARY"
    t = f"touch {canary}"
    monkeypatch.chdir(tmp_path)
    wrapper_dir = tmp_path / "py $(touch CANARY) 'q' ;&&"
    wrapper_dir.mkdir()
    dump = tmp_path / "env.txt"
    py = wrapper_dir / "python"
    # the interpreter: a wrapper at a hostile path that records what the job's environment holds
    py.write_text(f"#!/bin/sh\nprintenv R360_T_A R360_T_B R360_T_C R360_T_D >> {shlex.quote(str(dump))}\n"
                  f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    py.chmod(0o755)
    env_vals = {"R360_T_A": f"$({t})", "R360_T_B": f"`{t}`", "R360_T_C": f"x'; {t}; '\"", "R360_T_D": "$HOME ü"}
    comment = f"$({t}); `{t}` && 'q' \"d\" ü"
    c, plan, _, _ = main.build(compose_cfg(*TINY, "grid.backtracks=[0]", "launcher=slurm"))
    root = "rel runs 'q' $x"                                   # relative: from the cwd, tmp_path
    c["paths"].update(root=root, store=f"{root}/store", sweeps=f"{root}/sweeps")
    store = Store(c["paths"]["store"])
    c["sweep"]["name"] = NAME
    c["cluster"]["env"] = env_vals
    c["cluster"]["python"] = str(py)
    c["cluster"]["additional_sbatch"] = {"comment": comment}
    sweep_dir = Path(c["paths"]["sweeps"]) / NAME
    assert not sweep_dir.is_absolute()
    SlurmLauncher().validate(c, plan)
    main.record(c, plan, store, sweep_dir)
    assert submit.launch(c, plan, store, sweep_dir, QUIET, mode="render") == 0
    sh = tmp_path / "rel runs 'q' $x" / "sweeps" / NAME / "slurm" / "render" / "submit.sh"
    p = subprocess.run(["bash", str(sh)], cwd="/", capture_output=True, text=True, timeout=120)
    ids = dict(re.findall(r"^(\S+): (\d+)$", p.stdout, re.M))
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        assert set(ids) >= {"data", "analysis"}
        q = json.loads(slurm_query.run(["squeue", "--json"]))["jobs"]
        ana = next(j for j in q if str(j["job_id"]) == ids["analysis"])     # pending: afterany
        assert ana["name"] == f"r360-{NAME}-analysis" and ana["comment"] == comment
        sid = plan.points[0].stages["data"]
        wait_for(store.stage(sid).is_done, 240, 1, "the data stage of the hostile sweep")
        logs = (tmp_path / "rel runs 'q' $x" / "sweeps" / NAME / "slurm" / "logs").resolve()
        log = log_path(logs, ids["data"], 0).read_text()
        assert "[r360 job" in log and sid in log
        seen = dump.read_text().splitlines()
        assert seen[:4] == [env_vals[k] for k in sorted(env_vals)], seen
        assert not canary.exists() and not Path("/CANARY").exists() and not (tmp_path / "CANARY").exists()
    finally:
        if ids:
            slurm_query.scancel(sorted(ids.values()))


def test_launcher_submits_the_files_render_writes(slurm_cluster, tmp_path):
    """Render, then submit the same plan (held): every submitted job file is the rendered one but
    for its array file's path, and the dependencies are the ones submit.sh would pass."""
    c, plan, store, sweep_dir = main.build(compose_cfg(f"paths.root={tmp_path}", "launcher=slurm", "+grid=smoke",
                                                       "++cluster.additional_sbatch.hold=true"))
    SlurmLauncher().validate(c, plan)
    main.record(c, plan, store, sweep_dir)
    assert submit.launch(c, plan, store, sweep_dir, QUIET, mode="render") == 0
    out = sweep_dir / "slurm" / "render"
    try:
        assert submit.launch(c, plan, store, sweep_dir, QUIET, mode="launch") == 0
        sub = JobsFile(sweep_dir).submissions[-1]
        rendered = sorted(out.glob("[0-9]*.sbatch"))
        assert len(rendered) == len(sub["arrays"])
        ids = {}
        sh = (out / "submit.sh").read_text()
        for f, a in zip(rendered, sub["arrays"]):
            assert f.stem.split("-", 1)[1] == a["name"]
            ours = Path(a["sbatch"]).read_text()
            theirs = f.read_text().replace(str(out / "arrays" / f"{f.stem}.json"), a["array_file"])
            assert ours == theirs, a["name"]
            assert json.loads(Path(a["array_file"]).read_text()) == \
                json.loads((out / "arrays" / f"{f.stem}.json").read_text())
            ids[a["name"]] = a["job_id"]
            dep = re.search(rf'--dependency="([^"]*)" --kill-on-invalid-dep=no {re.escape(str(f))}\)', sh)
            want = dep.group(1) if dep else ""
            for n, j in ids.items():
                want = want.replace("${J_%s}" % n.replace("-", "_"), j)
            assert a["dependency"] == want, (a["name"], a["dependency"], want)
        ana = sub["analysis"]
        assert Path(ana["sbatch"]).read_text() == (out / "analysis.sbatch").read_text().replace(
            str(out / "arrays" / "analysis.json"), str(Path(ana["sbatch"]).parent.parent / "arrays" /
                                                       f"{Path(ana['sbatch']).stem}.json"))
        q = slurm_query.squeue([a["job_id"] for a in sub["arrays"]])
        assert q and all(t.state == "PENDING" for t in q.values())      # held: nothing runs
    finally:
        cancel_sweep(sweep_dir)
