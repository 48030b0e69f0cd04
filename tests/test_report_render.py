"""Look at the report as a person would: every figure has labelled axes, data in every panel,
a legend inside the figure whose entries are drawn differently and say what each series is, a
best-k star only where the paired CI supports it (checked on the matplotlib Figure objects);
the PNG/SVG files open; the HTML is self-contained and escapes model text; and headless
Chromium renders it (skipped, with the reason, when no Chromium is installed:
`apt-get install -y --no-install-recommends chromium`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from analysis import load_sweep
from analysis import plots as P
from analysis.report import build_report
from analysis.synthetic import make_sweep
from fixtures_smoke import REPO as ROOT
from fixtures_smoke import smoke_sweep  # noqa: F401  (registers the session fixture)

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                    "(apt-get install -y chromium)")


BASELINES = ("cold_start", "short_cot_correct", "long_cot_wrong_format")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    sweep = make_sweep(root, tasks=("countdown", "arc_1d"), baselines=BASELINES, evil_text=True, seed=7,
                       n_items=120, protocols=("sample", "greedy"), item_sd=1.0, seed_sd=0.1,
                       failed={"countdown-k2-s1": "rl"}, running={"arc_1d-k3-s0": "rl"},
                       pending=["countdown-cold_start-s2"])
    return build_report(sweep, n_boot=300)


def _texts(fig) -> list[str]:
    out = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    for ax in fig.get_axes():
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return out + [fig.get_suptitle()]


def test_every_figure_is_readable(report):
    assert set(report.figures) == {"fig_accuracy_vs_k", "fig_differences_sample", "fig_differences_greedy",
                                   "fig_backtracks_vs_k", "fig_rl_curves_countdown", "fig_rl_curves_arc_1d",
                                   "fig_rl_seeds_countdown", "fig_rl_seeds_arc_1d", "fig_sft_loss"}
    for stem, fig in report.figures.items():
        assert P.check_figure(fig) == [], stem
        for ax in fig.get_axes():
            assert ax.get_xlabel() and ax.get_title(), stem
            assert ax.get_ylabel() or P._shares_labelled_y(ax), stem
        # every legend entry is drawn differently from the others
        keys = [k for _, k in P.legend_entries(fig)]
        assert len(keys) == len(set(keys)) > 0, stem
    assert report.figure_problems == {}


def test_legends_say_what_each_series_is(report):
    texts = {stem: _texts(fig) for stem, fig in report.figures.items()}
    everything = "\n".join(t for ts in texts.values() for t in ts)
    assert "RL only" not in everything and "RL only" not in (report.out / "report.html").read_text()
    curves = texts["fig_rl_curves_countdown"]
    assert "cold start (no SFT: RL from the base model)" in curves
    assert "short CoT, correct (SFT, 1,216 ex.)" in curves and "long CoT, wrong format (SFT, 26 ex.)" in curves
    assert {"k=0", "k=1", "k=2", "k=3"} <= set(curves)
    acc = texts["fig_accuracy_vs_k"]
    assert "short CoT,\ncorrect\n1,216 ex." in acc and "long CoT,\nwrong\nformat\n26 ex." in acc
    assert "cold start\n(no SFT)" in acc
    assert any(t.startswith("countdown: one sample at T=1.0") for t in acc)
    assert any(t.startswith("countdown: greedy decoding") for t in acc)
    seeds = texts["fig_rl_seeds_countdown"]
    assert {"one seed (each line)", "mean over seeds", "min..max over seeds"} <= set(seeds)


def test_series_styles_stay_distinct_past_ten():
    keys = [f"k{i}" for i in range(25)] + ["cold_start", "short_cot_correct"]
    styles = P.variant_styles(keys)
    assert len(set(styles.values())) == len(keys)
    assert styles["k0"] == (P.PALETTE[0], "-") and styles["k10"] == (P.PALETTE[0], "--")
    assert len({c for c, _ in list(styles.values())[:10]}) == 10      # the first ten: ten colours


def test_a_variant_keeps_its_style_in_every_figure(report):
    def styles(fig):
        return {label: key for label, key in P.legend_entries(fig)}

    rl, sft = styles(report.figures["fig_rl_curves_countdown"]), styles(report.figures["fig_sft_loss"])
    assert "cold start (no SFT: RL from the base model)" in rl and not any("cold start" in x for x in sft)
    shared = set(rl) & set(sft)
    assert len(shared) == 6 and all(rl[x] == sft[x] for x in shared)


def test_rl_curves_with_many_series_pass_the_checks(tmp_path):
    sweep = make_sweep(tmp_path, ks=tuple(range(9)), baselines=BASELINES, seeds=(0, 1), n_items=20, text=False,
                       sft_steps=6, rl_steps=6, levels=())
    s = load_sweep(sweep)
    fig = P.rl_curves(s.steps, "countdown")
    assert len(P.legend_entries(fig)) == 12
    assert P.check_figure(fig) == []


def _plain_figure(w, h):
    """A figure laid out by hand (no constrained layout): what a careless plot would be."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def test_check_figure_catches_what_misleads():
    fig = _plain_figure(4, 3)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="C0", label="cold start")
    ax.plot([0, 1], [1, 0], color="C0", label="short CoT, correct")       # drawn alike
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="center left", bbox_to_anchor=(1.6, 0.5))               # outside the figure
    problems = P.check_figure(fig)
    assert any("drawn alike" in p and "cold start" in p for p in problems), problems
    assert any("legend reaches outside the figure" in p for p in problems), problems
    fig = _plain_figure(3, 2)
    ax = fig.subplots()
    for i in range(30):
        ax.plot([0, 1], [i, i], color=P.PALETTE[i % 10], linestyle=P.LINESTYLES[i // 10],
                label=f"a rather long series label number {i}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="upper left", fontsize=14)
    assert any("larger than the plotting area" in p for p in P.check_figure(fig))


def _best_stars(fig) -> list:
    return [a for ax in fig.get_axes() for a in ax.get_lines() if a.get_gid() == P.BEST_GID]


def test_best_k_star_only_where_the_paired_ci_supports_it(tmp_path):
    from analysis.aggregate import main_table

    common = dict(seeds=range(5), n_items=600, levels=(), protocols=("sample",), item_sd=1.0, seed_sd=0.05,
                  text=False, sft_steps=5, rl_steps=5)
    real = load_sweep(make_sweep(tmp_path / "a", accuracy={"k0": 0.40, "k1": 0.58, "k2": 0.40, "k3": 0.40,
                                                           "cold_start": 0.2}, **common))
    none = load_sweep(make_sweep(tmp_path / "b", accuracy={"k0": 0.40, "k1": 0.41, "k2": 0.40, "k3": 0.40,
                                                           "cold_start": 0.2}, **common))
    t_real, t_none = main_table(real), main_table(none)
    assert list(t_real.loc[t_real["best"], "variant"]) == ["k1"] and not t_none["best"].any()
    # some k has the highest mean in the second sweep too; it earns no star, and the words say why
    from analysis.study import study

    (statement,) = study(none).statements()
    assert "no k is better than the others at this scale: the highest mean, k=" in statement
    stars = _best_stars(P.accuracy_vs_k(t_real))
    assert len(stars) == 1 and stars[0].get_xdata()[0] == pytest.approx(1.0, abs=0.3)
    assert _best_stars(P.accuracy_vs_k(t_none)) == []


def test_forest_markers_are_filled_exactly_where_the_ci_excludes_zero(report):
    from matplotlib.colors import to_hex

    fig = report.figures["fig_differences_sample"]
    st = report.study
    d = st.diffs[(st.diffs.role == "rl_eval") & (st.diffs.protocol == "sample") & st.diffs["diff"].notna()]
    markers = [ln for ax in fig.get_axes() for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(markers) == len(d)
    filled = sorted(to_hex(m.get_markerfacecolor()) != "#ffffff" for m in markers)
    assert filled == sorted(d["significant"].astype(bool))
    for m in markers:       # each marker sits at its difference (points)
        x = float(m.get_xdata()[0])
        assert np.isclose(100 * d["diff"].to_numpy(dtype=float), x).any()


def test_figure_files_open(report):
    from PIL import Image

    for stem in report.figures:
        with Image.open(report.out / f"{stem}.png") as im:
            w, h = im.size
            assert w > 300 and h > 200
            px = np.asarray(im.convert("L"), dtype=float)
            assert px.std() > 5, f"{stem}.png looks blank"
        ET.parse(report.out / f"{stem}.svg")          # well-formed


def test_check_figure_catches_problems():
    fig = P.new_figure(4, 3)
    ax = fig.subplots()
    ax.plot([], [])
    problems = P.check_figure(fig)
    assert any("no x label" in p for p in problems) and any("no data" in p for p in problems)
    assert any("no legend" in p for p in problems)


def test_nothing_to_plot_gives_no_figure(tmp_path):
    sweep = make_sweep(tmp_path, ks=(0, 1), baselines=(), seeds=(0,), pending=["countdown-k0-s0", "countdown-k1-s0"])
    s = load_sweep(sweep)
    from analysis.aggregate import main_table

    t = main_table(s)
    assert P.accuracy_vs_k(t) is None and P.backtracks_vs_k(t) is None
    assert P.rl_curves(s.steps, "countdown") is None and P.sft_loss(s.steps) is None
    rep = build_report(s, n_boot=100)
    assert rep.figures == {}
    html = (rep.out / "report.html").read_text()
    assert "No finished eval or logged metrics yet" in html and "not started" in html


def test_html_is_self_contained_and_escaped(report):
    html = (report.out / "report.html").read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?https?:", html, re.I)
    assert "<link" not in html.lower()
    imgs = re.findall(r'<img [^>]*src="([^"]{0,30})', html)
    assert len(imgs) == len(report.figures) and all(s.startswith("data:image/svg+xml;base64,") for s in imgs)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    # the synthetic responses carry <script>, <img onerror> and </pre>: shown, escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; &lt;/pre&gt;" in html
    assert html.count('<mark class="bt">') > 10
    assert "<mark class=\"bt\">Wait, this doesn&#x27;t lead to the correct solution.</mark> Let me go back to step 0." in html


def test_backtrack_highlighting():
    from analysis.html import backtrack_regex, highlight

    pat = backtrack_regex("countdown")
    out = highlight("a<b> 12+7=19!=22^\n2^3=8\nWait, this doesn't lead to the correct solution. 16 is not", pat)
    assert "a&lt;b&gt;" in out
    assert '22<mark class="bt">^</mark>\n2^3=8' in out          # a `^` ends a dead-end line; 2^3 is no backtrack
    assert '<mark class="bt">Wait, this doesn&#x27;t lead to the correct solution.</mark> 16' in out
    assert highlight("x" * 10, pat, max_chars=4).startswith("xxxx<span class=\"cut\">")
    assert "(none)" in highlight(None, pat)
    # a task this checkout does not know: every task's phrases
    assert backtrack_regex("no-such-task").search("Back at (2, 3)") is not None


@pytest.mark.parametrize("style", ["compact", "paper"])
def test_highlighted_backtracks_are_the_ones_the_task_counts(style):
    """For every task with backtrack traces, a k=2 trace has exactly the 2 highlights its
    count_backtracks counts (the markers are the tasks' own: PAPER_MARKERS and `^`)."""
    import random

    import yaml

    from analysis.html import backtrack_regex
    from reasoning360.tasks import TASKS, get_task

    for name in TASKS:
        task = get_task(name)
        if not task.backtrack_sft:
            continue
        params = yaml.safe_load((ROOT / "configs" / "task" / f"{name}.yaml").read_text())["params"]["cpu"]
        problem = task.generate(4, 0, task.split_params(params, "sft"))[0]
        trace = task.trace(problem, 2, style, random.Random(0))
        assert len(backtrack_regex(name).findall(trace)) == task.count_backtracks(trace) == 2, (name, trace)


def _chromium(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="r360-chromium-")
    try:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_report_states_the_best_k_in_words_and_the_sizes(report):
    html = (report.out / "report.html").read_text()
    assert "Which k is best?" in html
    assert "no k is better than the others at this scale" in html or "is better than every other k" in html
    assert "SFT set sizes differ in countdown" in html and "1,216 †" in html
    md = (report.out / "main_table.md").read_text()
    assert md.startswith("**synthetic: which k is best?**")
    assert "accuracy after RL, sample protocol" in md and "accuracy before RL, greedy protocol" in md


@needs_chromium
def test_chromium_renders_the_report(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    url = (report.out / "report.html").resolve().as_uri()
    proc = _chromium([f"--screenshot={shot}", "--window-size=1400,2000", url])
    assert shot.exists(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1400, 2000)
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.std() > 20, "the screenshot is blank"
    # the header band (dark blue) and the figures (white panels) are there
    assert (px[:40, :, 2] > px[:40, :, 0] + 40).mean() > 0.5
    shutil.copy(shot, report.out / "screenshot.png")      # for a person to look at


@needs_chromium
def test_chromium_dom_has_no_script_from_model_text(report):
    url = (report.out / "report.html").resolve().as_uri()
    dom = _chromium(["--dump-dom", url]).stdout
    assert "<main>" in dom and "Sample traces" in dom
    assert "<script" not in dom.lower()
    assert 'onerror="alert' not in dom and "<img src=\"x\"" not in dom
    assert "&lt;script&gt;alert" in dom


def test_smoke_report_figures(smoke_sweep, tmp_path):
    rep = build_report(smoke_sweep, tmp_path / "report", n_boot=300)
    assert {"fig_accuracy_vs_k", "fig_rl_curves_countdown", "fig_sft_loss"} <= set(rep.figures)
    for stem, fig in rep.figures.items():
        assert P.check_figure(fig) == [], stem
    html = (rep.out / "report.html").read_text()
    plan = json.loads((smoke_sweep / "plan.json").read_text())
    for p in plan["points"]:
        assert p["name"] in html
