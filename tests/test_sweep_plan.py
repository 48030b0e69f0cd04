"""Grid expansion, content addresses, the stage graph and the sweep directory."""

from __future__ import annotations

import pytest

from reasoning360.launchers.pool import solo_stages
from reasoning360.sweep import grid, identity, main, sweepdir
from reasoning360.sweep.plan import plan as make_plan
from reasoning360.sweep.store import Store

from compose import compose_cfg, fake_checkpoint


def build(tmp_path, *overrides):
    cfg = compose_cfg(f"paths.root={tmp_path}", *overrides)
    return main.build(cfg)


def test_backtrack_grid_has_four_k_points_and_cold_start(tmp_path):
    c, plan, store, sweep_dir = build(tmp_path, "+grid=backtrack")
    names = [pp.name for pp in plan.points]
    assert names == [f"countdown-{v}-s{s}" for v in ("k0", "k1", "k2", "k3", "cold_start") for s in range(4)]
    cold = plan.points[-1].stages
    assert "sft" not in cold and "traces" not in cold
    # every point shares the one data stage (one test set) and the one base model (pretrain)
    assert len({pp.stages["data"] for pp in plan.points}) == 1
    assert len({pp.stages["base"] for pp in plan.points}) == 1
    assert plan.stages[cold["rl"]].spec["init"] == cold["base"]
    assert len({pp.stages["sft"] for pp in plan.points if "sft" in pp.stages}) == 16       # 4 k x 4 seeds
    assert len({pp.stages["traces"] for pp in plan.points if "traces" in pp.stages}) == 4   # traces: per k
    assert sweep_dir == tmp_path / "sweeps" / "backtrack"
    # the local pool runs the stages every point shares alone, with the whole thread budget;
    # whether any other stage has company depends on timing, so it always gets the same share
    assert {plan.stages[s].kind for s in solo_stages(plan)} == {"data", "pretrain"}
    assert len(solo_stages(plan)) == 2


def test_overrides_reach_the_stage_specs(tmp_path):
    _, plan, _, _ = build(tmp_path, "+grid=backtrack", "rl.rollout.n=4", "grid.seeds=[1]")
    rl = plan.stages[plan.points[0].stages["rl"]]
    assert rl.spec["rl"]["rollout"]["n"] == 4 and rl.spec["seed"] == 1


def test_rl_variant_shares_sft_stage(tmp_path):
    """Two RL settings of one (task, k) reuse one SFT run: the SFT id ignores RL keys."""
    _, a, _, _ = build(tmp_path, "+grid=backtrack")
    _, b, _, _ = build(tmp_path, "+grid=backtrack", "rl.kl_coef=0.01")
    assert a.points[1].stages["sft"] == b.points[1].stages["sft"]
    assert a.points[1].stages["rl"] != b.points[1].stages["rl"]


def test_axes_multiply_points(tmp_path):
    _, plan, _, _ = build(tmp_path, "+grid=smoke", "grid.axes={rl.kl_coef:[0.0,0.01],rl.lr:[1e-4,3e-4]}")
    assert len(plan.points) == 2 * 4
    assert len({pp.stages["rl"] for pp in plan.points}) == 8
    assert len({pp.stages["sft"] for pp in plan.points}) == 2


def test_stage_id_is_order_and_float_format_independent():
    a = {"kind": "sft", "task": "countdown", "sft": {"lr": 1e-4, "steps": 10}}
    b = {"sft": {"steps": 10.0, "lr": 0.0001}, "task": "countdown", "kind": "sft"}
    assert identity.stage_id(a) == identity.stage_id(b)
    assert identity.stage_id(a) != identity.stage_id({**a, "seed": 1})
    assert identity.stage_id(a).startswith("sft-countdown-")


@pytest.mark.parametrize("override, key", [
    ("grid.tasks=[nosuchtask]", "grid.tasks"),
    ("grid.backtracks=[-1]", "grid.backtracks"),
    ("grid.backtracks=[1.5]", "grid.backtracks"),
    ("grid.backtracks=[true]", "grid.backtracks"),
    ("grid.baselines=[warm_start]", "grid.baselines"),
    ("engine.name=jax", "engine.name"),
    ("model.path=/no/such/dir", "model.path"),
    ("data.test_size=0", "data.test_size"),
    ("grid.axes={rl.nosuchkey:[1]}", "grid.axes"),
    ("distill.teachers.long_cot.sft_k=-1", "distill.teachers.long_cot.sft_k"),
    ("distill.teachers.long_cot.sft_k=null", "distill.teachers.long_cot"),
    ("distill.teachers.long_cot.path=/no/such/dir", "distill.teachers.long_cot.path"),
    ("distill.teachers.short_cot.max_new_tokens=0", "distill.teachers.short_cot.max_new_tokens"),
    ("distill.backend=openai", "distill.backend"),
    ("distill.n=0", "distill.n"),
    ("distill.teachers.long_cot.sft_k=100000", "distill.teachers.long_cot.sft_k"),
    ("grid.rl_only_baselines=[short_cot_correct]", "grid.rl_only_baselines"),
])
def test_bad_input_is_one_line_naming_the_key(tmp_path, override, key):
    with pytest.raises(grid.GridError) as e:
        build(tmp_path, "+grid=baselines", override)     # the backtrack grid and every baseline
    msg = str(e.value)
    assert key in msg and "\n" not in msg
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "store").exists()


def test_paper_scale_needs_a_model_path(tmp_path):
    with pytest.raises(grid.GridError, match=r"model\.path: missing value"):
        build(tmp_path, "+grid=backtrack", "scale=paper")


def test_paper_scale_needs_a_gpu_when_run_locally(tmp_path):
    import torch

    from reasoning360.launchers import LaunchError, get_launcher
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    model = fake_checkpoint(tmp_path / "m")
    c, plan, *_ = build(tmp_path, "+grid=backtrack", "scale=paper", f"model.path={model}")
    with pytest.raises(LaunchError, match="engine.device: cuda"):
        get_launcher("local").validate(c, plan)


def test_k_beyond_the_search_space_is_refused(tmp_path):
    with pytest.raises(grid.GridError, match="k"):
        build(tmp_path, "+grid=backtrack", "grid.backtracks=[100000]")


def test_sweep_dir_round_trip_and_refuses_a_different_sweep(tmp_path):
    c, plan, store, sweep_dir = build(tmp_path, "+grid=smoke")
    main.record(c, plan, store, sweep_dir)
    loaded, store2, cfg = sweepdir.load(sweep_dir)
    assert [p.name for p in loaded.points] == [p.name for p in plan.points]
    assert loaded.points[0].stages == plan.points[0].stages
    for sid, s in plan.stages.items():
        assert loaded.stages[sid].deps == s.deps
        assert (store.root / sid / "spec.json").exists()
    # the same sweep again is fine; a different one under the same name is refused
    main.record(c, plan, store, sweep_dir)
    c2, plan2, store2, _ = build(tmp_path, "+grid=smoke", "rl.lr=5e-4")
    before = (sweep_dir / "plan.json").read_text()
    with pytest.raises(sweepdir.SweepDirError, match=r"rl\.lr"):
        main.record(c2, plan2, store2, sweep_dir)
    assert (sweep_dir / "plan.json").read_text() == before


def test_store_done_is_the_only_finish_marker(tmp_path):
    sd = Store(tmp_path).stage("sft-x-123")
    sd.write_record({"kind": "sft"}, {})
    assert not sd.is_done()
    sd.mark_failed("Traceback ...")
    assert sd.failure() == "Traceback ..."
    sd.mark_done({"accuracy": 0.5})
    assert sd.is_done() and sd.summary() == {"accuracy": 0.5} and sd.failure() is None
    assert not list(sd.path.glob(".*.tmp"))


def test_expansion_of_a_thousand_points_is_fast(tmp_path):
    import time
    cfg = compose_cfg(f"paths.root={tmp_path}", "+grid=smoke", "grid.seeds=[0,1,2,3,4,5,6,7,8,9]",
                      "grid.axes={rl.lr:[1e-4,2e-4,3e-4,4e-4,5e-4],rl.kl_coef:[0.0,0.001,0.002,0.003,0.004,0.005,0.006,0.007,0.008,0.009]}")
    c = main.resolve(cfg)
    t0 = time.time()
    points = grid.expand(c)
    p = make_plan(points)
    assert len(points) == 1000 and len(p.stages) > 2000
    assert time.time() - t0 < 10


# ----------------------------------------------------------------------------- distilled baselines

def test_distill_baselines_plan_teacher_distill_and_split(tmp_path):
    """Each distilled baseline SFTs on one split of a distill stage whose teacher is this
    sweep's own k-backtrack SFT model, shared with the k point; short and long CoT differ."""
    _, plan, _, _ = build(tmp_path, "+grid=baselines")
    by = {pp.name: pp.stages for pp in plan.points}
    assert len(plan.points) == 4 + 6
    k0, k3 = by["countdown-k0-s0"], by["countdown-k3-s0"]
    short, wrong = by["countdown-short_cot_correct-s0"], by["countdown-long_cot_wrong_format-s0"]
    assert short["teacher"] == k0["sft"] and wrong["teacher"] == k3["sft"]
    assert short["traces"] == k0["traces"]
    d = plan.stages[short["distill"]]
    assert d.kind == "distill" and d.deps == {"data": k0["data"], "teacher": k0["sft"]}
    assert d.id.startswith("distill-countdown_short_cot-")
    assert by["countdown-short_cot_incorrect-s0"]["distill"] == short["distill"]     # one sampling run
    assert wrong["distill"] != short["distill"]
    sft = {name: plan.stages[st["sft"]].spec for name, st in by.items() if "distill" in st}
    assert sft["countdown-short_cot_correct-s0"]["traces_file"] == "correct.parquet"
    assert sft["countdown-long_cot_wrong_format-s0"]["traces_file"] == "incorrect_format.parquet"
    assert "traces_file" not in plan.stages[k0["sft"]].spec
    # every SFT set is subsampled to one size (sft.max_examples) for fair comparisons, so the k
    # points differ from the backtrack grid's in that key only
    _, plain, _, _ = build(tmp_path, "+grid=backtrack")
    a, b = plan.stages[k0["sft"]].spec, plain.stages[plain.points[0].stages["sft"]].spec
    assert a["sft"]["max_examples"] == 1000 and b["sft"]["max_examples"] is None
    assert {**a, "sft": {**a["sft"], "max_examples": None}} == b


def test_a_teacher_checkpoint_path_replaces_the_sweeps_own_model(tmp_path):
    teacher = fake_checkpoint(tmp_path / "teacher")
    _, plan, _, _ = build(tmp_path, "+grid=baselines", "grid.backtracks=[]",
                          "grid.baselines=[long_cot_correct]", f"distill.teachers.long_cot.path={teacher}")
    (pp,) = plan.points
    assert "teacher" not in pp.stages and "traces" not in pp.stages
    assert plan.stages[pp.stages["distill"]].spec["teacher_path"] == str(teacher)


def test_paper_scale_asks_for_the_long_cot_teacher(tmp_path):
    with pytest.raises(grid.GridError, match=r"distill\.teachers\.long_cot: set path .*QwQ-32B"):
        build(tmp_path, "+grid=baselines", "scale=paper", f"model.path={fake_checkpoint(tmp_path / 'm')}",
              "launcher=slurm")


def test_local_concurrency_from_workers_and_threads(tmp_path, monkeypatch):
    from reasoning360.launchers.local import concurrency

    c, *_ = build(tmp_path, "+grid=smoke", "engine.device=cpu")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(2)))
    assert concurrency(c) == (2, 1)                              # auto, 2 cores: two 1-thread stages
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert concurrency(c) == (8, 2)
    c["launcher"]["workers"] = 1
    assert concurrency(c) == (1, 16)
    c["engine"]["threads"] = 3
    assert concurrency(c) == (1, 3)
    with pytest.raises(grid.GridError, match="launcher.workers"):
        build(tmp_path, "+grid=smoke", "launcher.workers=0")
