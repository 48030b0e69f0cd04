"""Look at the report as a person would: every figure has labelled axes, a legend and data in
every panel (checked on the matplotlib Figure objects); the PNG/SVG files open; the HTML is
self-contained and escapes model text; and headless Chromium renders it (skipped, with the
reason, when no Chromium is installed: `apt-get install -y chromium`).
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
from fixtures_smoke import smoke_sweep  # noqa: F401  (registers the session fixture)

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                    "(apt-get install -y chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    sweep = make_sweep(root, tasks=("countdown", "arc_1d"), evil_text=True, seed=7,
                       failed={"countdown-k2-s1": "rl"}, running={"arc_1d-k3-s0": "rl"},
                       pending=["countdown-cold_start-s2"])
    return build_report(sweep, n_boot=300)


def test_every_figure_is_readable(report):
    assert set(report.figures) == {"fig_accuracy_vs_k", "fig_backtracks_vs_k", "fig_rl_curves_countdown",
                                   "fig_rl_curves_arc_1d", "fig_sft_loss"}
    for stem, fig in report.figures.items():
        assert P.check_figure(fig) == [], stem
        for ax in fig.get_axes():
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), stem
    assert report.figure_problems == {}


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
    assert "This doesn&#x27;t work, go back to Node #0,0.</mark>" in html


def test_backtrack_highlighting():
    from analysis.html import DEFAULT_BACKTRACK_RE, backtrack_regex, highlight

    pat = re.compile(DEFAULT_BACKTRACK_RE)
    out = highlight("a<b> 12+7=19!=22^\nThis doesn't work, go back to Node #0,4.\nok", pat)
    assert "a&lt;b&gt;" in out
    assert '<mark class="bt">^</mark>' in out
    assert '<mark class="bt">This doesn&#x27;t work, go back to Node #0,4.</mark>' in out
    assert highlight("x" * 10, pat, max_chars=4).startswith("xxxx<span class=\"cut\">")
    assert "(none)" in highlight(None, pat)
    assert backtrack_regex("countdown").search("12+7=19!=22^") is not None
    assert backtrack_regex("no-such-task").pattern == DEFAULT_BACKTRACK_RE


def _chromium(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="r360-chromium-")
    try:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


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
