"""analysis: loading sweeps (partial ones too), the main table against a direct computation,
bootstrap CIs, missing-is-not-zero, difficulty tables, comparisons, and `r360 report`.

Synthetic sweeps (analysis.synthetic) are laid out exactly like the engine's; the tests at
the end run on the real smoke sweep (tests/fixtures_smoke.py), plus generated stages for scale.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load_sweep
from analysis import aggregate as A
from analysis import tables as T
from analysis.synthetic import make_sweep
from fixtures_smoke import smoke_sweep  # noqa: F401  (registers the session fixture)

FAILED = {"countdown-k2-s1": "rl", "arc_1d-k0-s0": "sft", "arc_1d-k0-s1": "rl_eval",
          "arc_1d-k0-s2": "sft"}
RUNNING = {"countdown-k3-s2": "rl"}
PENDING = ["countdown-cold_start-s2"]


@pytest.fixture(scope="module")
def partial(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("partial")
    return make_sweep(root, tasks=("countdown", "arc_1d"), failed=FAILED, running=RUNNING, pending=PENDING,
                      seed=1)


def direct_accuracy(sweep, role="rl_eval") -> dict[tuple[str, str], tuple[float, int]]:
    """(task, variant) -> (mean over seeds of per-seed accuracy, seeds), read straight from
    the items.parquet files of the DONE eval stages, without the analysis package."""
    plan = json.loads((sweep / "plan.json").read_text())
    store = Path(plan["store"])
    per_cell: dict[tuple[str, str], list[float]] = {}
    for p in plan["points"]:
        d = store / p["stages"][role]
        if not (d / "DONE").exists():
            continue
        variant = p["baseline"] or f"k{p['k']}"
        items = pd.read_parquet(d / "items.parquet")
        per_cell.setdefault((p["task"], variant), []).append(float(items["correct"].mean()))
    return {k: (float(np.mean(v)), len(v)) for k, v in per_cell.items()}


# ---------------------------------------------------------------------------- loading

def test_partial_sweep_loads_and_says_what_is_missing(partial):
    s = load_sweep(partial)
    assert len(s.points) == 2 * 5 * 3
    states = s.points.set_index("point")["state"]
    assert states["countdown-k2-s1"] == "failed"
    assert states["countdown-k3-s2"] == "running"
    assert states["countdown-cold_start-s2"] == "not started"
    assert states["countdown-k1-s0"] == "done"
    missing = "\n".join(s.missing)
    assert "countdown-k2-s1: no rl_eval: rl failed (RuntimeError: synthetic failure" in missing
    assert "countdown-k3-s2: no rl_eval: rl running at step 15" in missing
    assert "countdown-cold_start-s2" in missing and "not started" in missing
    assert len(s.missing) == len(FAILED) + len(RUNNING) + len(PENDING)
    # a failed or unfinished eval has NaN metrics, never 0
    ev = s.evals.set_index(["point", "role"])
    assert math.isnan(ev.loc[("countdown-k2-s1", "rl_eval"), "accuracy"])
    assert math.isnan(ev.loc[("arc_1d-k0-s1", "rl_eval"), "accuracy"])
    assert ev.loc[("countdown-k2-s1", "sft_eval"), "accuracy"] >= 0
    # the running RL stage shows its logged steps so far (from metrics.jsonl)
    run = s.steps[(s.steps.point == "countdown-k3-s2") & (s.steps.role == "rl")]
    assert list(run["step"]) == list(range(1, 16))
    assert s.describe().startswith("sweep synthetic: 30 points")


def test_tidy_frames_have_the_promised_columns(partial):
    s = load_sweep(partial)
    for col in ("task", "k", "baseline", "variant", "seed", "state", "model.hidden_size", "rl.lr",
                "rl.kl_coef", "sft.lr", "rl.rollout.n"):
        assert col in s.points.columns, col
    assert {"role", "stage_id", "state", "wall_s", "error"} <= set(s.stages.columns)
    assert set(s.stages["role"]) == {"data", "traces", "sft", "sft_eval", "rl", "rl_eval"}
    for col in ("step", "loss", "reward_mean", "reward_std", "format_rate", "response_length", "backtracks",
                "lr", "tokens_per_s", "task", "variant", "seed", "role"):
        assert col in s.steps.columns, col
    for col in ("task", "variant", "seed", "correct", "format_ok", "response_tokens", "backtracks",
                "difficulty.n_people"):
        assert col in s.items.columns, col
    assert "response" not in s.items.columns      # text only on request
    assert s.items["correct"].dtype == bool
    # one row per logged step: 40 per finished SFT run, the 20 logged before it failed otherwise
    sizes = s.steps[s.steps.role == "sft"].groupby("point", observed=True).size()
    assert sizes["arc_1d-k0-s0"] == 20 and sizes["arc_1d-k0-s1"] == 40
    assert (sizes.drop(["arc_1d-k0-s0", "arc_1d-k0-s2"]) == 40).all()


def test_shared_stage_appears_once_per_point(tmp_path):
    # two RL settings share each SFT run (the SFT id does not depend on the RL axis)
    sweep = make_sweep(tmp_path, ks=(0, 1), baselines=(), seeds=(0,), axes={"rl.kl_coef": [0.0, 0.01]},
                       sft_steps=12, rl_steps=6)
    s = load_sweep(sweep)
    assert s.axes == ["rl.kl_coef"]
    sft = s.steps[s.steps.role == "sft"]
    assert len(sft) == 4 * 12 and sft["stage_id"].nunique() == 2
    assert set(s.points["rl.kl_coef"]) == {0.0, 0.01}
    table = A.main_table(s)
    assert len(table) == 4 and set(table["rl.kl_coef"]) == {0.0, 0.01}


def test_not_a_sweep_says_so(tmp_path):
    from reasoning360.sweep.sweepdir import SweepDirError

    with pytest.raises(SweepDirError, match="no sweep"):
        load_sweep(tmp_path / "nothing")


# ---------------------------------------------------------------------------- the main table

def test_main_table_matches_direct_computation(partial):
    s = load_sweep(partial)
    table = A.main_table(s).set_index(["task", "variant"])
    direct = direct_accuracy(partial)
    for (task, variant), (acc, seeds) in direct.items():
        row = table.loc[(task, variant)]
        assert row["acc"] == pytest.approx(acc, abs=1e-12), (task, variant)
        assert row["seeds"] == seeds
        assert row["acc_lo"] <= row["acc"] <= row["acc_hi"], (task, variant)
        assert 0.0 <= row["acc_lo"] and row["acc_hi"] <= 1.0
    # SFT accuracy ("before RL") too
    direct_sft = direct_accuracy(partial, "sft_eval")
    for (task, variant), (acc, _) in direct_sft.items():
        assert table.loc[(task, variant), "sft_acc"] == pytest.approx(acc, abs=1e-12)


def test_missing_points_are_missing_not_zero(partial):
    s = load_sweep(partial)
    table = A.main_table(s).set_index(["task", "variant"])
    # arc_1d k0: every seed failed -> no value at all
    row = table.loc[("arc_1d", "k0")]
    assert row["seeds"] == 0 and row["seeds_planned"] == 3
    assert math.isnan(row["acc"]) and math.isnan(row["acc_lo"]) and math.isnan(row["acc_hi"])
    assert not row["best"] and "arc_1d-k0-s0: failed" in row["missing"]
    # countdown k2: one failed seed -> mean over the two others, not a third of zero
    row = table.loc[("countdown", "k2")]
    assert row["seeds"] == 2
    assert row["acc"] == pytest.approx(direct_accuracy(partial)[("countdown", "k2")][0])
    # rendered as "-" and listed, never as 0
    md = T.to_markdown(T.main_display(A.main_table(s)))
    line = next(ln for ln in md.splitlines() if ln.startswith("| arc_1d | k=0 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "0/3" and cells[4] == "-" and "0.0" not in cells[4]
    assert "missing in arc_1d k=0" in md


def test_best_k_and_gain_over_cold_start(partial):
    s = load_sweep(partial)
    table = A.main_table(s)
    for task, g in table.groupby("task"):
        ks = g[g["k"].notna() & g["acc"].notna()]
        assert list(ks.loc[ks["best"], "variant"]) == [ks.loc[ks["acc"].idxmax(), "variant"]]
        cold = g.loc[g["variant"] == "cold_start", "acc"].iloc[0]
        np.testing.assert_allclose(g["gain"], g["acc"] - cold)
    # the synthetic accuracies peak at k=1 for countdown
    assert table[(table.task == "countdown") & table.best]["variant"].tolist() == ["k1"]


def test_table_outputs(partial, tmp_path):
    s = load_sweep(partial)
    table = A.main_table(s)
    d = T.main_display(table, s.axes)
    paths = T.write_all(d, table, tmp_path / "main")
    md, tex, csv = (p.read_text() for p in paths)
    best = table[(table.task == "countdown") & table.best].iloc[0]
    shown = f"{100 * best['acc']:.1f} [{100 * best['acc_lo']:.1f}, {100 * best['acc_hi']:.1f}]"
    assert f"**{shown} {T.BEST}**" in md
    assert rf"\textbf{{{shown} $^\star$}}" in tex and r"\toprule" in tex and "cold\\_start" in tex
    back = pd.read_csv(tmp_path / "main.csv")
    np.testing.assert_allclose(back["acc"], table["acc"])


# ---------------------------------------------------------------------------- bootstrap

def test_bootstrap_contains_the_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    for trial in range(200):
        S = int(rng.integers(1, 6))
        n = rng.integers(1, 60, S).astype(float)
        c = np.array([rng.binomial(int(x), rng.random()) for x in n], dtype=float)
        mean, lo, hi = A.bootstrap_binary(n, c, n_boot=500, key=str(trial))
        assert mean == pytest.approx(np.mean(c / n))
        assert lo <= mean <= hi
        assert 0.0 <= lo and hi <= 1.0
    a = A.bootstrap_binary([40, 40], [10, 30], seed=3, key="x")
    assert a == A.bootstrap_binary([40, 40], [10, 30], seed=3, key="x")
    assert a != A.bootstrap_binary([40, 40], [10, 30], seed=4, key="x")
    assert A.bootstrap_binary([20], [0]) == (0.0, 0.0, 0.0)
    assert all(math.isnan(x) for x in A.bootstrap_binary([], []))


def test_bootstrap_width_shrinks_with_items_and_grows_with_seed_spread():
    _, lo1, hi1 = A.bootstrap_binary([20], [10])
    _, lo2, hi2 = A.bootstrap_binary([2000], [1000])
    assert (hi2 - lo2) < (hi1 - lo1) / 5
    _, lo3, hi3 = A.bootstrap_binary([2000] * 3, [200, 1000, 1800])     # seeds disagree
    assert (hi3 - lo3) > 5 * (hi2 - lo2)
    # a binomial item bootstrap: the CI of 50/100 is about +-10 points
    _, lo, hi = A.bootstrap_binary([100], [50], n_boot=4000)
    assert 0.38 < lo < 0.42 and 0.58 < hi < 0.62


def test_bootstrap_mean_matches_binary_version():
    groups = [np.r_[np.ones(12), np.zeros(28)], np.r_[np.ones(30), np.zeros(10)]]
    m1, lo1, hi1 = A.bootstrap_mean(groups, n_boot=4000)
    m2, lo2, hi2 = A.bootstrap_binary([40, 40], [12, 30], n_boot=4000)
    assert m1 == pytest.approx(m2)
    assert lo1 == pytest.approx(lo2, abs=0.03) and hi1 == pytest.approx(hi2, abs=0.03)


# ---------------------------------------------------------------------------- difficulty, curves, comparison

def test_difficulty_table_matches_items(partial):
    s = load_sweep(partial)
    diff = A.difficulty_table(s)
    assert set(diff["difficulty"]) == {"difficulty.n_people"}
    items = s.items[s.items.role == "rl_eval"]
    for _, r in diff.iterrows():
        sel = items[(items.task == r["task"]) & (items.variant == r["variant"])
                    & (items["difficulty.n_people"] == r["level"])]
        per_seed = sel.groupby("seed")["correct"].mean()
        assert r["acc"] == pytest.approx(per_seed.mean())
        assert r["acc_lo"] <= r["acc"] <= r["acc_hi"]
        assert r["n_items"] == len(sel)
    displays = T.difficulty_display(diff)
    assert [d.headers[1:] for d in displays][0] == ["n_people=2", "n_people=3", "n_people=4"]


def test_curves_aggregate_over_seeds(partial):
    s = load_sweep(partial)
    c = A.curves(s.steps, ["reward_mean", "val_accuracy", "not_logged"], role="rl")
    assert "not_logged_mean" not in c.columns
    rl = s.steps[(s.steps.role == "rl") & (s.steps.task == "countdown") & (s.steps.variant == "k1")]
    at5 = rl[rl.step == 5]["reward_mean"]
    row = c[(c.task == "countdown") & (c.variant == "k1") & (c.step == 5)].iloc[0]
    assert row["reward_mean_mean"] == pytest.approx(at5.mean())
    assert row["reward_mean_count"] == len(at5) == 3


def test_compare_two_sweeps(tmp_path):
    a = make_sweep(tmp_path, name="a", tasks=("countdown",), seed=1, failed={"countdown-k3-s0": "rl"})
    b = make_sweep(tmp_path, name="b", tasks=("countdown", "arc_1d"), seed=2)
    sa, sb = load_sweep(a), load_sweep(b)
    cmp = A.compare_table([sa, sb]).set_index(["task", "variant"])
    ta, tb = A.main_table(sa).set_index(["task", "variant"]), A.main_table(sb).set_index(["task", "variant"])
    for key in tb.index:
        assert cmp.loc[key, "acc[b]"] == pytest.approx(tb.loc[key, "acc"])
        if key in ta.index:
            assert cmp.loc[key, "acc[a]"] == pytest.approx(ta.loc[key, "acc"])
            assert cmp.loc[key, "delta[b]"] == pytest.approx(tb.loc[key, "acc"] - ta.loc[key, "acc"])
        else:   # only in b: a's side is missing, not 0
            assert math.isnan(cmp.loc[key, "acc[a]"]) and math.isnan(cmp.loc[key, "delta[b]"])
    assert cmp.loc[("countdown", "k3"), "seeds[a]"] == 2
    pts = A.compare_points([sa, sb])
    row = pts[(pts.task == "countdown") & (pts.variant == "k3") & (pts.seed == 0)].iloc[0]
    assert math.isnan(row["accuracy[a]"]) and row["state[a]"] == "failed" and row["accuracy[b]"] >= 0


# ---------------------------------------------------------------------------- r360 report

def test_r360_report_writes_tables_figures_html(partial, tmp_path, capsys):
    from reasoning360.cli import main

    root = tmp_path / "copy"          # a sweep and its store copied elsewhere (plan.json names the old store)
    shutil.copytree(partial.parent.parent, root)
    sweep = root / "sweeps" / "synthetic"
    plan = json.loads((sweep / "plan.json").read_text())
    plan["store"] = str(tmp_path / "where-it-was" / "store")
    (sweep / "plan.json").write_text(json.dumps(plan))
    assert load_sweep(sweep).store == root / "store"
    assert main(["report", str(sweep), "--n-boot", "500"]) == 0
    out = capsys.readouterr().out
    assert "final accuracy after RL" in out and "countdown-k2-s1" in out and "missing" in out
    rep = sweep / "report"
    for name in ("main_table.md", "main_table.tex", "main_table.csv", "difficulty.md", "difficulty.tex",
                 "difficulty.csv", "report.html", "fig_accuracy_vs_k.png", "fig_accuracy_vs_k.svg",
                 "fig_backtracks_vs_k.png", "fig_rl_curves_countdown.png", "fig_rl_curves_arc_1d.svg",
                 "fig_sft_loss.png", "fig_sft_loss.svg"):
        assert (rep / name).stat().st_size > 0, name
    html = (rep / "report.html").read_text()
    assert "countdown-k2-s1" in html and "Sample traces" in html and 'class="bt"' in html
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_r360_report_by_name(tmp_path, monkeypatch):
    from reasoning360.cli import main

    make_sweep(tmp_path, name="small", ks=(0, 1), baselines=(), seeds=(0,), levels=(), sft_steps=5, rl_steps=4)
    monkeypatch.setenv("R360_ROOT", str(tmp_path))
    assert main(["report", "small", "--n-boot", "100", "--out", str(tmp_path / "byname")]) == 0
    assert (tmp_path / "byname" / "report.html").exists()
    assert not (tmp_path / "byname" / "difficulty.md").exists()     # no difficulty levels recorded


def test_r360_report_two_sweeps_side_by_side(tmp_path, capsys):
    from reasoning360.cli import main

    a = make_sweep(tmp_path, name="a", tasks=("countdown",), seed=1)
    b = make_sweep(tmp_path, name="b", tasks=("countdown",), seed=2, pending=["countdown-k0-s0"])
    assert main(["report", str(a), str(b), "--n-boot", "300"]) == 0
    out = capsys.readouterr().out
    assert "side by side" in out
    d = a / "report" / "compare-b"
    for name in ("compare.md", "compare.tex", "compare.csv", "compare_points.csv", "compare.html",
                 "fig_compare_accuracy.png", "fig_compare_accuracy.svg"):
        assert (d / name).exists(), name
    md = (d / "compare.md").read_text()
    assert "| countdown | k=1 |" in md and "b - a" in md
    assert "[b] countdown-k0-s0" in (d / "compare.html").read_text()


def test_bench_runs_at_small_scale(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "bench" / "bench_analysis.py"), "--runs", "40", "--steps",
                           "50", "--repeat", "1", "--keep", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "load + aggregate 40 runs x 50 steps" in proc.stdout and "OK" in proc.stdout


# ---------------------------------------------------------------------------- the real smoke sweep

def test_smoke_sweep_table_matches_items(smoke_sweep):
    s = load_sweep(smoke_sweep)
    assert set(s.points["state"]) == {"done"} and not s.missing
    table = A.main_table(s).set_index(["task", "variant"])
    for (task, variant), (acc, seeds) in direct_accuracy(smoke_sweep).items():
        row = table.loc[(task, variant)]
        assert row["acc"] == pytest.approx(acc, abs=1e-12)
        assert row["seeds"] == seeds
        assert row["acc_lo"] <= row["acc"] <= row["acc_hi"]
    # the summaries the sweeper wrote agree with the items
    for _, e in s.evals.iterrows():
        items = pd.read_parquet(s.store / e["stage_id"] / "items.parquet")
        assert e["accuracy"] == pytest.approx(items["correct"].mean())
        assert e["n"] == len(items)
        assert e["mean_backtracks"] == pytest.approx(items["backtracks"].mean())


def test_smoke_sweep_metric_keys_feed_the_plots(smoke_sweep):
    from analysis import plots as P

    s = load_sweep(smoke_sweep)
    steps = s.steps
    assert set(steps["role"]) == {"sft", "rl"}
    titles = [t for t, _, _ in P.rl_panels(steps)]
    assert {"reward", "response length", "backtracks per response"} <= set(titles), titles
    assert any(t.endswith("accuracy") for t in titles)
    assert steps.loc[steps.role == "sft", "loss"].notna().all()
    assert {"correct", "format_ok", "response_tokens", "backtracks"} <= set(s.items.columns)


def test_smoke_plus_generated_points(smoke_sweep, tmp_path):
    """Real stage outputs of the smoke sweep and generated ones in one sweep: the loader and
    the table treat them alike."""
    root = tmp_path / "mixed"
    plan = json.loads((smoke_sweep / "plan.json").read_text())
    store = root / "store"
    shutil.copytree(plan["store"], store, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors", "model*"))
    gen = make_sweep(root, name="gen", tasks=("countdown",), ks=(2, 3), baselines=("cold_start",), seeds=(0, 1),
                     store=store, failed={"countdown-k3-s1": "rl"}, seed=5)
    gplan = json.loads((gen / "plan.json").read_text())
    mixed = {"store": str(store), "points": plan["points"] + gplan["points"],
             "stages": {**plan["stages"], **gplan["stages"]}}
    sweep = root / "sweeps" / "mixed"
    sweep.mkdir(parents=True)
    (sweep / "plan.json").write_text(json.dumps(mixed))
    shutil.copy(smoke_sweep / "sweep.yaml", sweep / "sweep.yaml")
    s = load_sweep(sweep)
    table = A.main_table(s).set_index(["task", "variant"])
    assert {"k0", "k1", "k2", "k3", "cold_start"} == set(table.loc["countdown"].index)
    for key, (acc, seeds) in direct_accuracy(sweep).items():
        assert table.loc[key, "acc"] == pytest.approx(acc, abs=1e-12)
        assert table.loc[key, "seeds"] == seeds
    assert table.loc[("countdown", "k3"), "seeds_planned"] == 2
    assert table.loc[("countdown", "k3"), "seeds"] == 1
    assert len(s.missing) == 1 and "countdown-k3-s1" in s.missing[0]
    assert len(s.steps[s.steps.role == "rl"]["point"].unique()) == len(s.points)
