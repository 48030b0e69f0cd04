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
from analysis import stats as S
from analysis import tables as T
from analysis.study import study
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
    d = T.main_display(A.main_table(s))
    md = T.to_markdown(d)
    line = next(ln for ln in md.splitlines() if ln.startswith("| arc_1d | k=0 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[d.headers.index("seeds")] == "0/3"
    for h in (T.AFTER, "RL gain", "Δ cold start"):
        assert cells[d.headers.index(h)] == "-", h
    assert "missing in arc_1d k=0" in md


def test_best_k_is_declared_only_when_the_paired_ci_excludes_zero(partial):
    s = load_sweep(partial)
    table = A.main_table(s)
    st = study(s)
    items = s.items[s.items.role == "rl_eval"]
    per_seed = items.groupby(["task", "variant", "seed"], observed=True)["correct"].mean()
    for task, g in table.groupby("task"):
        cold = per_seed.loc[(task, "cold_start")]
        for _, r in g[g["variant"] != "cold_start"].iterrows():
            if r["seeds"] == 0:
                assert math.isnan(r["gain"])
                continue
            mine = per_seed.loc[(task, r["variant"])]
            both = mine.index.intersection(cold.index)         # paired on the seeds both have
            assert r["gain"] == pytest.approx((mine[both] - cold[both]).mean()), (task, r["variant"])
            assert r["gain"] == r["d_cold"]
        row = st.best[(st.best.task == task) & (st.best.axis == "k") & (st.best.role == "rl_eval")]
        if len(row):
            row = row.iloc[0]
            # a star exactly when the statement declares a best k, and then on the top k
            assert list(g.loc[g["best"], "variant"]) == ([row["top_cell"][0]] if row["declared"] else [])
            assert ("is better than every other k" in row["statement"]) == bool(row["declared"])
            assert ("no k is better than the others at this scale" in row["statement"]) != bool(row["declared"])
    # 3 seeds x 40 items cannot separate k's 8 points apart: no star, and the words say so
    assert not table["best"].any()
    assert any("countdown" in x and "no k is better than the others at this scale" in x for x in st.statements())


def test_table_outputs(tmp_path):
    sweep = make_sweep(tmp_path, seeds=range(5), n_items=600, levels=(), item_sd=1.0, seed_sd=0.05, text=False,
                       accuracy={"k0": 0.40, "k1": 0.60, "k2": 0.40, "k3": 0.40, "cold_start": 0.20},
                       sft_steps=5, rl_steps=5)
    s = load_sweep(sweep)
    table = A.main_table(s)
    d = T.main_display(table, s.axes)
    paths = T.write_all(d, table, tmp_path / "main")
    md, tex, csv = (p.read_text() for p in paths)
    best = table[(table.task == "countdown") & table.best].iloc[0]
    assert best["variant"] == "k1"
    shown = f"{100 * best['acc']:.1f} [{100 * best['acc_lo']:.1f}, {100 * best['acc_hi']:.1f}]"
    assert f"**{shown} {T.BEST}**" in md
    d_k0 = f"{100 * best['d_k0']:+.1f} [{100 * best['d_k0_lo']:+.1f}, {100 * best['d_k0_hi']:+.1f}]"
    assert f"**{d_k0}**" in md                # significant: bold
    assert rf"\textbf{{{shown} $^\star$}}" in tex and r"\toprule" in tex and "cold start" in tex
    back = pd.read_csv(tmp_path / "main.csv")
    np.testing.assert_allclose(back["acc"], table["acc"])
    np.testing.assert_allclose(back["d_k0"], table["d_k0"])


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


# ---------------------------------------------------------------------------- paired statistics
# Synthetic cells with a known truth: P(correct) = sigmoid(logit(acc) + item_sd z_i + seed_sd b_s),
# z shared by every cell (the same test items), b drawn per cell and seed (training runs).

def _logit(p):
    return np.log(p / (1 - p))


def _cells(rng, accs, *, seeds=5, items=1000, item_sd=1.0, seed_sd=0.1):
    z = rng.standard_normal(items)
    out = []
    for acc in accs:
        b = rng.standard_normal(seeds)
        p = 1 / (1 + np.exp(-(_logit(acc) + item_sd * z[None, :] + seed_sd * b[:, None])))
        out.append((rng.random((seeds, items)) < p).astype(float))
    return out


def _true_mean(acc, item_sd, seed_sd, n=2_000_000):
    g = np.random.default_rng(99).standard_normal((2, n))
    return float(np.mean(1 / (1 + np.exp(-(_logit(acc) + item_sd * g[0] + seed_sd * g[1])))))


def test_a_real_difference_of_ten_points_is_detected():
    rng = np.random.default_rng(0)
    truth = _true_mean(0.50, 1.0, 0.1) - _true_mean(0.40, 1.0, 0.1)
    assert 0.07 < truth < 0.10          # ~8.5 points on the accuracy scale
    a, b = _cells(rng, [0.50, 0.40])
    e = S.paired_diff(a, b, key="ten")
    assert e.significant and e.lo > 0
    assert e.lo < truth < e.hi
    assert e.value == pytest.approx(a.mean() - b.mean())
    assert (e.seeds, e.items) == (5, 1000)
    assert e.half_width < 0.05           # the Done-when of issue 15: k-vs-k half-width <= 5 points


@pytest.mark.parametrize("item_sd,seed_sd", [(1.0, 0.15), (0.0, 0.0), (0.0, 0.4)],
                         ids=["realistic", "items-only", "seed-dominated"])
def test_identical_points_are_rarely_declared_different(item_sd, seed_sd):
    """Over 300 simulated studies of two identical points (5 seeds x 300 items), the paired CI
    excludes 0 about 5% of the time: the seed level is as wide as a paired t-test over seeds,
    and item noise is not counted twice."""
    rng = np.random.default_rng(11)
    hits = 0
    for r in range(300):
        a, b = _cells(rng, [0.4, 0.4], items=300, item_sd=item_sd, seed_sd=seed_sd)
        hits += S.paired_diff(a, b, n_boot=1000, key=str(r)).significant
    assert hits / 300 <= 0.075, hits


def test_plain_bootstrap_over_five_seeds_is_overconfident():
    """Why the seed level is corrected: the textbook crossed bootstrap over 5 seeds calls
    identical points different more than twice as often as it should (12% vs 5.5% here)."""
    rng = np.random.default_rng(12)
    plain = corrected = 0
    for r in range(160):
        a, b = _cells(rng, [0.4, 0.4], items=200, item_sd=0.0, seed_sd=0.4)
        plain += S.paired_diff(a, b, n_boot=800, key=str(r), method="plain").significant
        corrected += S.paired_diff(a, b, n_boot=800, key=str(r)).significant
    assert plain / 160 >= 0.10 and corrected / 160 <= 0.075, (plain, corrected)


def test_pairing_narrows_the_interval_on_correlated_items():
    """Test items differ in difficulty for every model alike: paired on the items, that
    shared part cancels; unpaired, it widens the interval."""
    rng = np.random.default_rng(1)

    def ratio(item_sd, seeds):
        out = []
        for r in range(6):
            a, b = _cells(rng, [0.45, 0.40], seeds=seeds, item_sd=item_sd, seed_sd=0.05)
            paired, unpaired = S.paired_diff(a, b, key=str(r)), S.unpaired_diff(a, b, key=str(r))
            assert paired.value == pytest.approx(unpaired.value)
            out.append(paired.half_width / unpaired.half_width)
        return float(np.mean(out))

    assert ratio(2.0, 5) < 0.8
    assert ratio(2.0, 1) < 0.8
    assert 0.85 < ratio(0.0, 1) < 1.15        # no shared difficulty: pairing gains nothing, loses nothing


def test_one_seed_covers_test_items_only():
    rng = np.random.default_rng(2)
    a, b = _cells(rng, [0.45, 0.40], seeds=1, items=2000, item_sd=0.0, seed_sd=0.0)
    e = S.paired_diff(a, b, n_boot=4000, key="one")
    d = (a - b)[0]
    assert e.seeds == 1
    assert e.half_width == pytest.approx(1.96 * d.std() / np.sqrt(len(d)), rel=0.1)   # the item bootstrap


def test_group_is_seeded_order_free_and_pairs_on_what_both_have():
    rng = np.random.default_rng(3)
    ys = _cells(rng, [0.4, 0.5, 0.45])
    cells = {n: S.Cell.of(y) for n, y in zip("abc", ys)}
    g1, g2 = S.Group(cells, key="k"), S.Group(cells, key="k")
    first = (g1.mean("a"), g1.diff("b", "a"), g1.diff("c", "a"))
    second = (g2.diff("c", "a"), g2.diff("b", "a"), g2.mean("a"))[::-1]
    assert first == second
    assert S.Group(cells, key="k", seed=1).diff("b", "a") != first[1]
    # a seed missing in one cell: that comparison uses the 4 seeds both have
    cells["d"] = S.Cell.of(ys[1][1:], seeds=[1, 2, 3, 4])
    g = S.Group(cells, key="k")
    e = g.diff("d", "a")
    assert e.seeds == 4 and e.value == pytest.approx(ys[1][1:].mean() - ys[0][1:].mean())
    # a NaN (an item not scored for one seed) drops that item from the cell's comparisons
    y = ys[2].copy()
    y[0, 7] = np.nan
    cells["e"] = S.Cell.of(y)
    assert S.Group(cells, key="k").diff("e", "a").items == 999
    # a mean's CI stays inside [0, 1]
    low = S.mean_ci(np.r_[np.ones(2), np.zeros(38)][None, :], key="low")
    assert 0.0 <= low.lo <= low.value <= low.hi <= 1.0


def test_best_is_declared_only_when_it_beats_every_other():
    rng = np.random.default_rng(4)
    ys = _cells(rng, [0.40, 0.55, 0.42, 0.40])
    g = S.Group({f"k{i}": S.Cell.of(y) for i, y in enumerate(ys)}, key="best")
    b = g.best(["k0", "k1", "k2", "k3"])
    assert b.declared and b.top == "k1" and b.runner_up == "k2" and b.margin.lo > 0
    assert set(b.versus) == {"k0", "k2", "k3"} and all(e.lo > 0 for e in b.versus.values())
    # identical k's: a best k is declared in at most ~5% of simulated studies
    declared = 0
    for r in range(150):
        ys = _cells(rng, [0.4] * 4, items=300, seed_sd=0.1)
        declared += S.Group({i: S.Cell.of(y) for i, y in enumerate(ys)}, n_boot=1000, key=str(r)).best(
            list(range(4))).declared
    assert declared / 150 <= 0.05, declared


# ---------------------------------------------------------------------------- the study on synthetic sweeps

EFFECT = {"k0": 0.40, "k1": 0.52, "k2": 0.40, "k3": 0.40, "cold_start": 0.20,
          "short_cot_correct": 0.35, "long_cot_wrong_format": 0.05}


@pytest.fixture(scope="module")
def effect_sweep(tmp_path_factory) -> Path:
    """5 seeds x 1,000 shared test items x both protocols, a real effect at k=1 and none
    between k=0, 2, 3; two SFT baselines of very different SFT set sizes."""
    root = tmp_path_factory.mktemp("effect")
    return make_sweep(root, seeds=range(5), n_items=1000, levels=(), protocols=("sample", "greedy"),
                      baselines=("cold_start", "short_cot_correct", "long_cot_wrong_format"), accuracy=EFFECT,
                      item_sd=1.0, seed_sd=0.1, text=False, sft_steps=8, rl_steps=8, seed=3)


def test_study_finds_the_effect_that_was_put_in(effect_sweep):
    s = load_sweep(effect_sweep)
    st = study(s)
    assert st.protocols == ["sample", "greedy"] and st.primary == "sample" and not st.old_items
    for proto in st.protocols:
        t = st.table(proto).set_index("variant")
        assert list(t.index[t["best"]]) == ["k1"], proto
        assert t.loc["k1", "d_k0_lo"] > 0
        for k in ("k2", "k3"):         # no real difference from k=0: the CI says so
            assert t.loc[k, "d_k0_lo"] < 0 < t.loc[k, "d_k0_hi"], (proto, k)
            assert t.loc[k, "d_k0_hi"] - t.loc[k, "d_k0_lo"] < 0.12
        assert (t.drop("cold_start")["d_cold_lo"].drop("long_cot_wrong_format") > 0).all()
        assert t.loc["long_cot_wrong_format", "d_cold_hi"] < 0
        assert (t["rl_gain_lo"] > 0).all()           # every row moves under RL, cold start included
        assert (t["seeds"] == 5).all() and (t["n_items"] == 1000).all()
    (statement,) = st.statements()
    assert statement.startswith("countdown, after RL, sampled: k=1 is better than every other k: +")
    assert "over the runner-up k=" in statement and "5 seeds x 1,000 items" in statement
    # the numbers are the paired differences of the items themselves
    it = s.items[(s.items.role == "rl_eval") & (s.items.protocol == "sample")]
    acc = it.groupby("variant", observed=True)["correct"].mean()
    t = st.table("sample").set_index("variant")
    assert t.loc["k1", "d_k0"] == pytest.approx(acc["k1"] - acc["k0"])
    assert t.loc["k1", "acc"] == pytest.approx(acc["k1"])
    before = s.items[(s.items.role == "sft_eval") & (s.items.protocol == "sample")]
    assert t.loc["k1", "rl_gain"] == pytest.approx(acc["k1"] - before[before.variant == "k1"]["correct"].mean())


def test_study_reports_sft_set_sizes_and_flags_unfair_comparisons(effect_sweep):
    s = load_sweep(effect_sweep)
    st = study(s)
    t = st.table().set_index("variant")
    assert t.loc["k0", "sft_examples"] == 4000 and not t.loc["k0", "size_flag"]
    assert t.loc["short_cot_correct", "sft_examples"] == 1216 and t.loc["short_cot_correct", "size_flag"]
    assert t.loc["long_cot_wrong_format", "sft_examples"] == 26
    assert np.isnan(t.loc["cold_start", "sft_examples"])
    (note,) = [n for n in st.notes if n.startswith("SFT set sizes differ")]
    assert "k=0/1/2/3: 4,000 each" in note and "long CoT, wrong format: 26" in note
    assert "short CoT, correct vs long CoT, wrong format (46.8x)" in note and "mixes" in note
    md = T.to_markdown(T.main_display(st.table(), s.axes))
    assert "| 1,216 † |" in md and "| none (base model) |" in md


def test_no_effect_gives_no_best_k_in_words(tmp_path):
    sweep = make_sweep(tmp_path, seeds=range(4), n_items=500, levels=(), protocols=("sample",),
                       accuracy={f"k{k}": 0.4 for k in range(4)} | {"cold_start": 0.3}, item_sd=1.0,
                       seed_sd=0.1, text=False, sft_steps=5, rl_steps=5)
    st = study(load_sweep(sweep))
    assert not st.table()["best"].any()
    (statement,) = st.statements()
    assert "no k is better than the others at this scale" in statement
    assert "paired 95% CI" not in statement or "includes 0" in statement


def test_best_value_of_a_grid_axis_in_words(tmp_path):
    sweep = make_sweep(tmp_path, ks=(0, 1), baselines=(), seeds=range(3), n_items=300, levels=(),
                       axes={"rl.kl_coef": [0.0, 0.01]}, text=False, sft_steps=5, rl_steps=5)
    st = study(load_sweep(sweep))
    axis_rows = st.best[(st.best.axis == "rl.kl_coef") & (st.best.role == "rl_eval")]
    assert len(axis_rows) == 2                            # within k=0 and within k=1
    assert all("no kl_coef is better than the others at this scale" in x for x in axis_rows["statement"])
    assert set(axis_rows["context"]) == {"k=0", "k=1"}
    k_rows = st.best[(st.best.axis == "k") & (st.best.role == "rl_eval")]
    assert set(k_rows["context"]) == {"kl_coef=0.0", "kl_coef=0.01"}


def test_single_seed_sweep_says_its_intervals_cover_items_only(tmp_path):
    sweep = make_sweep(tmp_path, seeds=(0,), n_items=200, levels=(), text=False, sft_steps=5, rl_steps=5)
    s = load_sweep(sweep)
    st = study(s)
    assert st.old_items and st.protocols == ["greedy"]          # items without a protocol column
    assert set(s.items["protocol"]) == {"greedy"} and set(s.items["sample"]) == {0}
    assert (st.cells["ci"] == "items only (1 seed)").all()
    assert any(n.startswith("One training seed per point") for n in st.notes)
    assert any("read as greedy decoding" in n for n in st.notes)
    assert all("one seed: the CI covers test items only" in x for x in st.statements())
    t = st.table()
    assert t["acc_lo"].notna().all() and t["d_k0"].notna().sum() == 4      # k1..k3 and cold start


def test_evals_without_items_fall_back_to_summaries(tmp_path):
    sweep = make_sweep(tmp_path, seeds=(0, 1), n_items=100, levels=(), items=False, sft_steps=5, rl_steps=5)
    s = load_sweep(sweep)
    st = study(s)
    t = st.table()
    assert t["acc"].notna().all() and t["d_k0"].isna().all() and st.diffs.empty
    assert set(t["ci"]) == {"summary only (no items.parquet): not paired"}
    assert any("no items.parquet" in n for n in st.notes)
    ev = s.evals[s.evals.role == "rl_eval"].groupby("variant")["accuracy"].mean()
    np.testing.assert_allclose(t.set_index("variant")["acc"].sort_index(), ev.sort_index())


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
    assert "accuracy after RL, greedy protocol" in out and "countdown-k2-s1" in out and "missing" in out
    assert "no k is better than the others at this scale" in out
    rep = sweep / "report"
    for name in ("main_table.md", "main_table.tex", "main_table.csv", "differences.csv", "cells.csv", "best.csv",
                 "difficulty.md", "difficulty.tex", "difficulty.csv", "report.html", "fig_accuracy_vs_k.png",
                 "fig_accuracy_vs_k.svg", "fig_differences_greedy.png", "fig_backtracks_vs_k.png",
                 "fig_rl_curves_countdown.png", "fig_rl_curves_arc_1d.svg", "fig_rl_seeds_countdown.png",
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
                           "50", "--points", "4", "--seeds", "2", "--items", "50", "--repeat", "1",
                           "--keep", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "load + aggregate 40 runs x 50 steps" in proc.stdout and "OK" in proc.stdout
    assert "paired statistics 4 points x 2 seeds x 50 items x 2 protocols" in proc.stdout
    assert "TOO SLOW" not in proc.stdout


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
    for _, e in s.evals.iterrows():           # summaries: the primary protocol at the last step
        items = pd.read_parquet(s.store / e["stage_id"] / "items.parquet")
        summary = json.loads((s.store / e["stage_id"] / "summary.json").read_text())
        items = items[(items["protocol"] == summary["primary"]) & (items["step"] == items["step"].max())]
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
