"""The Slurm launcher without Slurm: arrays, dependencies, chunks, resources, sbatch text,
squeue/sacct parsing and status derivation (fast; run everywhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from reasoning360.launchers import status
from reasoning360.launchers.slurm import arrays, resources, sbatch, query as slurm_query, submit
from reasoning360.launchers.slurm.jobs import JobsFile
from reasoning360.launchers.slurm.resources import ResourceError
from reasoning360.launchers.slurm.query import ClusterInfo, NodeInfo, PartitionInfo
from reasoning360.sweep import main

from compose import compose_cfg


def build(tmp_path, *overrides):
    return main.build(compose_cfg(f"paths.root={tmp_path}", "launcher=slurm", *overrides))


def res_of(c):
    cache = {}

    def f(sid, kind):
        if kind not in cache:
            cache[kind] = resources.resolve(c, kind)
        return cache[kind]
    return f


def waits_for(arr: arrays.Array, task: int, by_name: dict[str, arrays.Array]) -> set[str]:
    """Stage ids task `task` of `arr` waits for, under Slurm's measured semantics: aftercorr on
    A waits for task i of A if A has one, else for every task of A."""
    out = set()
    for n in arr.corr:
        up = by_name[n]
        out |= {up.tasks[task]} if task in up.tasks else set(up.tasks.values())
    for n, t in arr.after_tasks:
        out.add(by_name[n].tasks[t])
    for n in arr.after_all:
        out |= set(by_name[n].tasks.values())
    return out


def check_exact(plan, arrs, submit_set):
    by_name = {a.name: a for a in arrs}
    seen = set()
    for a in arrs:
        for t, sid in a.tasks.items():
            assert sid not in seen
            seen.add(sid)
            deps = {d for d in plan.stages[sid].deps.values() if d in submit_set}
            got = waits_for(a, t, by_name)
            assert deps <= got, (a.name, sid)
            if not a.coarsened:
                assert got == deps, (a.name, sid, got - deps)
    assert seen == set(submit_set)


def test_compress_and_expand():
    assert arrays.compress([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slurm_query.expand_array_string("0-2,5,7-8%4") == [0, 1, 2, 5, 7, 8]
    assert slurm_query.expand_array_string("0-10:5") == [0, 5, 10]
    assert slurm_query.expand_hex_bitmap("0x15") == [0, 2, 4]
    assert slurm_query.parse_minutes("1-02:03:00") == 1 * 1440 + 2 * 60 + 3
    assert slurm_query.parse_minutes("UNLIMITED") is None and slurm_query.parse_minutes("30") == 30
    assert slurm_query.expand_nodelist("gpu[01-03,07],cpu1") == ["gpu01", "gpu02", "gpu03", "gpu07", "cpu1"]
    assert slurm_query.gres_gpus("gpu:a100:8(S:0-1),nvme:1") == 8


def test_backtrack_grid_arrays_and_dependencies(tmp_path):
    c, plan, store, _ = build(tmp_path, "+grid=backtrack", "grid.seeds=[0]")
    todo = set(plan.stages)
    arrs = arrays.build(plan, todo, {}, res_of(c), max_array_size=1001)
    names = [a.name for a in arrs]
    assert names[:3] == ["data", "base", "traces"]          # base: the shared pretrain stage
    check_exact(plan, arrs, todo)
    by = {a.name: a for a in arrs}
    # the shared data and base stages are waited for by task id, the one-to-one traces -> SFT edge
    # by aftercorr
    assert by["traces"].after_tasks == [("data", 0)] and not by["traces"].corr
    sft = by["sft"]
    assert "traces" in sft.corr and set(sft.after_tasks) == {("data", 0), ("base", 0)}
    ids = {n: str(100 + i) for i, n in enumerate(names)}
    dep = sft.dependency(ids)
    assert dep.startswith(f"aftercorr:{ids['traces']},afterok:") and f"{ids['data']}_0" in dep and f"{ids['base']}_0" in dep
    # cold start has no SFT: its RL is in its own array (different dependencies)
    rl_arrays = [a for a in arrs if a.role == "rl"]
    assert sum(len(a.tasks) for a in rl_arrays) == 5 and len(rl_arrays) == 2


def test_shared_sft_splits_rl_by_sft_task(tmp_path):
    """RL variants that share one SFT run wait for that run only (afterok jobid_task)."""
    c, plan, store, _ = build(tmp_path, "+grid=smoke", "grid.axes={rl.kl_coef:[0.0,0.01,0.02]}")
    todo = set(plan.stages)
    arrs = arrays.build(plan, todo, {}, res_of(c), max_array_size=1001)
    check_exact(plan, arrs, todo)
    rl = [a for a in arrs if a.role == "rl"]
    assert len(rl) == 2 and all(len(a.tasks) == 3 for a in rl)
    assert all(len({n for n, _ in a.after_tasks if n.startswith("sft")}) == 1 for a in rl)


def test_chunks_respect_max_array_size(tmp_path):
    c, plan, store, _ = build(tmp_path, "+grid=smoke", "grid.seeds=[0,1,2,3,4]",
                              "grid.axes={rl.kl_coef:[0.0,0.01]}")
    todo = set(plan.stages)
    arrs = arrays.build(plan, todo, {}, res_of(c), max_array_size=3)
    check_exact(plan, arrs, todo)
    assert len(plan.points) == 20
    for a in arrs:
        assert max(a.tasks) < 3 and a.offset % 3 == 0
        for n in a.corr:   # aftercorr only within one chunk (task ids line up)
            assert next(x for x in arrs if x.name == n).chunk == a.chunk
    assert {a.chunk for a in arrs if a.role == "rl_eval"} == set(range(7))


def test_coarsening_stays_correct(tmp_path):
    c, plan, store, _ = build(tmp_path, "+grid=smoke", "grid.axes={rl.kl_coef:[0.0,0.01,0.02]}")
    todo = set(plan.stages)
    arrs = arrays.build(plan, todo, {}, res_of(c), max_array_size=1001, max_groups=1)
    check_exact(plan, arrs, todo)
    assert all(len([a for a in arrs if a.role == r]) == 1 for r in {a.role for a in arrs})
    assert any(a.coarsened for a in arrs)


def test_done_and_queued_stages(tmp_path):
    c, plan, store, _ = build(tmp_path, "+grid=smoke")
    p0 = plan.points[0].stages
    done = {p0["data"], p0["base"], p0["traces"]}
    live = {plan.points[1].stages["traces"]: "77_1"}
    todo = set(plan.stages) - done - set(live)
    arrs = arrays.build(plan, todo, live, res_of(c), max_array_size=1001)
    check_exact(plan, arrs, todo)
    assert arrs[0].role == "sft"
    deps = " ".join(a.dependency({x.name: "9" for x in arrs}) for a in arrs)
    assert "77_1" in deps                 # a queued upstream is waited for by its job id
    assert all(not n.startswith(("data", "base", "traces")) for a in arrs for n in a.corr)   # DONE: no dependency


def cluster(max_time=None, cpus=2, mem=24000, gpus=0, feats=()):
    return ClusterInfo(1001, {"debug": PartitionInfo("debug", max_time, None, ["vm"], "UP", True)},
                       {"vm": NodeInfo("vm", cpus, mem, gpus, set(feats), "IDLE")})


def test_resources_local_and_generic(tmp_path):
    c, *_ = build(tmp_path, "+grid=smoke")
    r = resources.resolve(c, "sft")
    assert (r.gpus, r.cpus, r.mem_gb, r.partition) == (0, 1, 3, "debug")
    g, *_ = build(tmp_path, "+grid=smoke", "cluster=generic_gpu")
    sft, data = resources.resolve(g, "sft"), resources.resolve(g, "data")
    assert (sft.gpus, sft.cpus, sft.mem_gb) == (8, 64, 640)
    assert (data.gpus, data.partition) == (0, "cpu")
    assert resources.resolve(g, "rl").nodes == 2
    st = sbatch.site(g)
    text = sbatch.script(st, name="j", res=sft, array="0-3%2", log_dir=tmp_path,
                         argv=sbatch.job_argv(st, tmp_path / "a.json"))
    for frag in ("--gpus-per-node=8", "--cpus-per-task=64", "--mem=655360M", "--partition=gpu",
                 "--array=0-3%2", "--signal=USR2@90", "--requeue", "srun", "source $HOME/venvs/r360"):
        assert frag in text, frag
    g["cluster"]["gres"] = "gpu:h100:{gpus}"
    text = sbatch.script(sbatch.site(g), name="j", res=sft, array=None, log_dir=tmp_path, argv=["x"])
    assert "#SBATCH --gres=gpu:h100:8" in text and "gpus-per-node" not in text


@pytest.mark.parametrize("override,key", [
    ("cluster.resources.sft.gpus=2", "cluster.resources.sft.gpus"),
    ("cluster.partition=null", "cluster.partition"),
    ("+cluster.bogus=1", "cluster.bogus"),
    ("+cluster.resources.sftt={cpus:1}", "cluster.resources.sftt"),
])
def test_bad_profile_names_the_key(tmp_path, override, key):
    c, plan, *_ = build(tmp_path, "+grid=smoke", override)
    with pytest.raises(ResourceError) as e:
        resources.check_profile(c)
        for k in resources.resource_keys():
            resources.resolve(c, k)
    assert str(e.value).startswith(key + ":"), str(e.value)


@pytest.mark.parametrize("override,info,key", [
    ("cluster.partition=gpu", cluster(), "cluster.partition"),
    ("cluster.resources.rl.cpus=4", cluster(), "cluster.resources.rl.cpus"),
    ("cluster.resources.rl.mem_gb=64", cluster(), "cluster.resources.rl.mem_gb"),
    ("cluster.resources.rl.time_minutes=120", cluster(max_time=60), "cluster.resources.rl.time_minutes"),
    ("++cluster.resources.rl.nodes=2", cluster(), "cluster.resources.rl.nodes"),
    ("cluster.time_minutes=300", cluster(max_time=240), "cluster.resources.data.time_minutes"),
])
def test_unsatisfiable_request_refused(tmp_path, override, info, key):
    c, plan, *_ = build(tmp_path, "+grid=smoke", override)
    if key == "cluster.resources.data.time_minutes":
        c["cluster"]["resources"]["data"]["time_minutes"] = 300
    with pytest.raises(ResourceError) as e:
        for k in resources.resource_keys():
            resources.check_against(resources.resolve(c, k), info)
    assert str(e.value).startswith(key + ":"), str(e.value)


SQUEUE = {"jobs": [
    {"job_id": 12, "array_job_id": 12, "array_task_id": None, "array_task_string": "1,3-4%2",
     "job_state": "PENDING", "state_reason": "Dependency", "start_time": 1, "end_time": 0, "restart_cnt": 0},
    {"job_id": 15, "array_job_id": 12, "array_task_id": 0, "array_task_string": "", "job_state": "RUNNING",
     "state_reason": "None", "start_time": 1000, "end_time": 0, "restart_cnt": 1},
    {"job_id": 99, "array_job_id": 0, "array_task_id": None, "array_task_string": "", "job_state": "PENDING",
     "state_reason": "Priority", "start_time": 0, "end_time": 0},
    {"job_id": 5, "array_job_id": 4, "array_task_id": 0, "array_task_string": "", "job_state": "RUNNING",
     "state_reason": "None", "start_time": 0, "end_time": 0},
]}
SACCT = {"jobs": [
    {"job_id": 20, "array": {"job_id": 19, "task_id": 2}, "state": {"current": "REQUEUED", "reason": "None"},
     "time": {"start": 10, "end": 20}},
    {"job_id": 20, "array": {"job_id": 19, "task_id": 2}, "state": {"current": "FAILED", "reason": "None"},
     "time": {"start": 30, "end": 40}},
    {"job_id": 19, "array": {"job_id": 19, "task": "0x3", "task_id": None},
     "state": {"current": "PENDING", "reason": "Dependency"}, "time": {"start": 0, "end": 0}},
]}


def test_squeue_and_sacct_parsing(monkeypatch):
    def fake_run(argv, timeout=60, check=True):
        slurm_query.CALLS[argv[0]] += 1
        return json.dumps(SQUEUE if argv[0] == "squeue" else SACCT)

    monkeypatch.setattr(slurm_query, "run", fake_run)
    q = slurm_query.squeue(["12", "99"])
    assert set(q) == {"12_0", "12_1", "12_3", "12_4", "99"}        # job 4 is not ours
    assert q["12_0"].state == "RUNNING" and q["12_0"].restarts == 1
    assert q["12_3"].reason == "Dependency" and q["12_3"].start is None
    a = slurm_query.sacct(["19"])
    assert a["19_2"].state == "FAILED"                               # newest record of a requeued task
    assert a["19_0"].state == a["19_1"].state == "PENDING"


def test_status_from_directories_and_slurm(tmp_path, monkeypatch):
    c, plan, store, sweep_dir = build(tmp_path, "+grid=smoke")
    main.record(c, plan, store, sweep_dir)
    p0, p1 = plan.points[0].stages, plan.points[1].stages
    store.stage(p0["data"]).mark_done({"wall_s": 3.0})
    sft = store.stage(p0["sft"])
    (sft.path / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n')
    store.stage(p1["traces"]).mark_failed("Traceback (most recent call last):\nRuntimeError: boom\n")
    snap = status.snapshot(sweep_dir)            # a local sweep: directories only
    by = {(r.point, r.role): r for r in snap.rows}
    assert by[(plan.points[1].name, "data")].state == "done"
    assert by[(plan.points[1].name, "traces")].state == "failed"
    r = by[(plan.points[0].name, "sft")]
    assert (r.step, r.total, r.metric_name, r.metric) == (2, 30, "loss", 2.5)
    assert by[(plan.points[0].name, "rl")].state == "not started"
    assert not snap.slurm

    # with jobs.json: one squeue and one sacct call, whatever the size
    JobsFile(sweep_dir).add([{"name": "sft", "job_id": "12", "role": "sft", "kind": "sft",
                              "tasks": {"0": p0["sft"], "1": p1["sft"]}},
                             {"name": "rl", "job_id": "19", "role": "rl", "kind": "rl",
                              "tasks": {"2": p0["rl"]}}], None)

    def fake_run(argv, timeout=60, check=True):
        slurm_query.CALLS[argv[0]] += 1
        return json.dumps(SQUEUE if argv[0] == "squeue" else SACCT)

    monkeypatch.setattr(slurm_query, "run", fake_run)
    monkeypatch.setattr(slurm_query, "available", lambda: True)
    slurm_query.CALLS.clear()
    snap = status.snapshot(sweep_dir)
    assert slurm_query.CALLS == {"squeue": 1, "sacct": 1}
    by = {(r.point, r.role): r for r in snap.rows}
    assert by[(plan.points[0].name, "sft")].state == "running"
    # pending on a dependency whose upstream stage (traces) failed: it can never run
    assert by[(plan.points[1].name, "sft")].label == f"failed ({status.NEVER})"
    assert by[(plan.points[0].name, "rl")].state == "failed"


def test_a_job_pending_on_an_ended_upstream_is_replaced(tmp_path, monkeypatch):
    """Slurm marks a job whose afterok upstream failed DependencyNeverSatisfied only at its next
    dependency check (seconds later; never for a dependent of that dependent): until then it
    says `Dependency`. A resubmission in that window replaces it instead of waiting for it, and
    `r360 status` shows it failed, down the chain, while a job pending on a running upstream
    stays queued."""
    c, plan, store, sweep_dir = build(tmp_path, "+grid=smoke")
    main.record(c, plan, store, sweep_dir)
    p0, p1 = plan.points[0].stages, plan.points[1].stages
    for role in ("data", "base", "traces"):
        for pp in (p0, p1):
            store.stage(pp[role]).mark_done({"wall_s": 1.0})
    store.stage(p0["sft"]).mark_failed("RuntimeError: boom\n")
    JobsFile(sweep_dir).add([{"name": n, "job_id": j, "role": n, "kind": n, "tasks": {"0": p0[n], "1": p1[n]}}
                             for n, j in (("sft", "12"), ("rl", "19"), ("rl_eval", "23"))], None)
    pending = {"job_state": "PENDING", "state_reason": "Dependency", "start_time": 0, "end_time": 0}
    queue = {"jobs": [   # sft 12_0 has ended (failed: no DONE); 12_1 runs; their dependents wait
        {"job_id": 13, "array_job_id": 12, "array_task_id": 1, "job_state": "RUNNING", "state_reason": "None",
         "start_time": 5, "end_time": 0},
        {"job_id": 19, "array_job_id": 19, "array_task_id": None, "array_task_string": "0-1", **pending},
        {"job_id": 23, "array_job_id": 23, "array_task_id": None, "array_task_string": "0-1", **pending}]}

    def fake_run(argv, timeout=60, check=True):
        if argv[0] == "squeue":
            return json.dumps(queue)
        if argv[0] == "sacct":
            return json.dumps({"jobs": []})
        raise slurm_query.SlurmError(f"{argv[0]}: no controller in this test")

    monkeypatch.setattr(slurm_query, "run", fake_run)
    monkeypatch.setattr(slurm_query, "available", lambda: True)
    assert arrays.never_start(plan, {p0["rl"], p0["rl_eval"], p1["rl"]}, {p0["sft"]}) == {p0["rl"], p0["rl_eval"]}
    assert arrays.never_start(plan, {p0["rl_eval"]}, set()) == set()
    by = {(r.point, r.role): r for r in status.snapshot(sweep_dir).rows}
    assert [by[(plan.points[0].name, r)].label for r in ("rl", "rl_eval")] == [f"failed ({status.NEVER})"] * 2
    assert [by[(plan.points[1].name, r)].state for r in ("sft", "rl", "rl_eval")] == ["running", "pending", "pending"]

    con = Console(record=True, width=200)
    assert submit.launch(c, plan, store, sweep_dir, con, mode="dry_run") == 0
    table = {cells[0]: cells[1:] for line in con.export_text().splitlines()
             if len(cells := line.strip("│ ").split(" │ ")) == 5 and cells[0].strip() in ("sft", "rl", "rl_eval")}
    # unique, done, queued, to submit: point 0's sft, rl and rl_eval again; point 1's waited for
    assert {k.strip(): [int(v) for v in vs] for k, vs in table.items()} == {
        "sft": [2, 0, 1, 1], "rl": [2, 0, 1, 1], "rl_eval": [2, 0, 1, 1]}, con.export_text()


def test_render_without_slurm(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_query, "available", lambda: False)
    c, plan, store, sweep_dir = build(tmp_path, "+grid=smoke")
    main.record(c, plan, store, sweep_dir)
    assert submit.launch(c, plan, store, sweep_dir, Console(), mode="render") == 0
    out = sweep_dir / "slurm" / "render"
    files = sorted(p.name for p in out.glob("*.sbatch"))
    assert files[0] == "00-data.sbatch" and "analysis.sbatch" in files
    text = (out / "03-sft.sbatch").read_text()
    assert "#SBATCH --array=0-1" in text and "reasoning360.launchers.slurm.job" in text
    sh = (out / "submit.sh").read_text()
    assert "--dependency=\"aftercorr:${J_traces}" in sh and "afterany:" in sh
    assert str(out / "03-sft.sbatch") in sh              # absolute: submit.sh runs from anywhere
    # the launcher refuses to submit without Slurm, before writing anything
    assert submit.launch(c, plan, store, sweep_dir, Console(), mode="launch") == 2
    assert not (sweep_dir / "jobs.json").exists()


def test_templates_emit_the_writers_flags(tmp_path):
    """slurm/*.sbatch (by hand) carry the writer's #SBATCH flags (partition and array go on the
    sbatch command line), the same signal/requeue/output contract, and run the same entry point."""
    c, *_ = build(tmp_path, "+grid=smoke")
    st = sbatch.site(c)
    root = Path(__file__).resolve().parents[1] / "slurm"
    for name, kind, array in (("stage.sbatch", "sft", "0-1"), ("analysis.sbatch", "analysis", None)):
        gen_text = sbatch.script(st, name="j", res=resources.resolve(c, kind), array=array, log_dir=tmp_path,
                                 argv=sbatch.job_argv(st, tmp_path / "A.json"))
        tmpl_text = (root / name).read_text()
        gen, tmpl = sbatch.read_flags(gen_text), sbatch.read_flags(tmpl_text)
        assert set(tmpl) == set(gen) - {"partition", "array"}, (name, set(tmpl) ^ set(gen))
        for k in ("signal", "requeue", "open-mode", "ntasks-per-node", "nodes"):
            assert tmpl[k] == gen[k], (name, k, tmpl[k], gen[k])
        assert gen["signal"] == f"USR2@{c['launcher']['signal_delay_s']}"
        assert tmpl["output"].endswith(Path(gen["output"]).name), (name, tmpl["output"])
        srun = [ln for ln in tmpl_text.splitlines() if ln.startswith("srun ")]
        assert len(srun) == 1 and srun[0].startswith("srun --unbuffered --output ")
        assert gen_text.rstrip().splitlines()[-1].startswith("srun --unbuffered --output ")
        assert "-u -m reasoning360.launchers.slurm.job" in srun[0]
    assert "reasoning360.launchers.slurm.job --analysis" in (root / "analysis.sbatch").read_text()


def test_distill_baselines_get_a_distill_array_after_the_teacher(tmp_path):
    """The distill stages run as one array (a teacher server per task) that waits for the
    teacher's SFT task only; the baselines' SFT waits for its distill task."""
    c, plan, store, _ = build(tmp_path, "+grid=baselines")
    todo = set(plan.stages)
    arrs = arrays.build(plan, todo, {}, res_of(c), max_array_size=1001)
    check_exact(plan, arrs, todo)
    distill = [a for a in arrs if a.role == "distill"]
    assert sum(len(a.tasks) for a in distill) == 2              # short CoT and long CoT teachers
    sids = {sid for a in distill for sid in a.tasks.values()}
    assert {plan.stages[s].kind for s in sids} == {"distill"}
    assert all(a.resources.gpus == 0 for a in distill)           # the CPU test cluster's profile
    c2, plan2, _, _ = build(tmp_path, "+grid=baselines", "cluster=generic_gpu")
    assert resources.resolve(c2, "distill").gpus == 4
