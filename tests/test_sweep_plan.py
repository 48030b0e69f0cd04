"""Grid expansion, content addresses, the stage graph and the sweep directory."""

from __future__ import annotations

import pytest

from reasoning360.sweep import grid, identity, main, sweepdir
from reasoning360.sweep.graph import plan as make_plan
from reasoning360.sweep.store import Store

from compose import compose_cfg


def build(tmp_path, *overrides):
    cfg = compose_cfg(f"paths.root={tmp_path}", *overrides)
    return main.build(cfg)


def test_backtrack_grid_has_four_k_points_and_cold_start(tmp_path):
    c, plan, store, sweep_dir = build(tmp_path, "+grid=backtrack")
    names = [pp.name for pp in plan.points]
    assert names == ["countdown-k0-s0", "countdown-k1-s0", "countdown-k2-s0", "countdown-k3-s0",
                     "countdown-cold_start-s0"]
    cold = plan.points[-1].stages
    assert "sft" not in cold and "traces" not in cold
    # every point shares the one data stage, so every point is evaluated on one test set
    assert len({pp.stages["data"] for pp in plan.points}) == 1
    assert len({pp.stages["sft"] for pp in plan.points[:4]}) == 4
    assert sweep_dir == tmp_path / "sweeps" / "backtrack"


def test_overrides_reach_the_stage_specs(tmp_path):
    _, plan, _, _ = build(tmp_path, "+grid=backtrack", "rl.rollout.n=4", "seed=1", "grid.seeds=[1]")
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
])
def test_bad_input_is_one_line_naming_the_key(tmp_path, override, key):
    with pytest.raises(grid.GridError) as e:
        build(tmp_path, "+grid=backtrack", override)
    msg = str(e.value)
    assert key in msg and "\n" not in msg
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "store").exists()


def test_paper_scale_needs_a_model_path(tmp_path):
    with pytest.raises(grid.GridError, match=r"model\.path: missing value"):
        build(tmp_path, "+grid=backtrack", "scale=paper")


def test_paper_scale_needs_a_gpu_when_run_locally(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(grid.GridError, match="engine.device: cuda"):
        build(tmp_path, "+grid=backtrack", "scale=paper", f"model.path={tmp_path}")


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
        assert (store.root / sid / "spec.yaml").exists()
    # the same sweep again is fine; a different one under the same name is refused
    main.record(c, plan, store, sweep_dir)
    c2, plan2, store2, _ = build(tmp_path, "+grid=smoke", "rl.lr=5e-4")
    before = (sweep_dir / "plan.json").read_text()
    with pytest.raises(sweepdir.SweepDirError, match=r"rl\.lr"):
        main.record(c2, plan2, store2, sweep_dir)
    assert (sweep_dir / "plan.json").read_text() == before


def test_store_done_is_the_only_finish_marker(tmp_path):
    sd = Store(tmp_path).stage("sft-x-123")
    sd.write_spec({"kind": "sft"}, {})
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
