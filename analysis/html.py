"""The report as one self-contained HTML file: tables, figures (inlined as base64 SVG),
and per point a few sample eval traces with their backtracks highlighted. No external
asset, no script: it opens from a file over ssh without port forwarding.

Model text is untrusted: every string from a sweep is HTML-escaped, the page carries a
Content-Security-Policy that forbids scripts and remote loads, and long responses are cut.

Backtracks are highlighted where the task counts them (`Task.count_backtracks`): its
`PAPER_MARKERS` phrases (`paper` traces: one per dead end) and the compact traces' `^` that
ends a dead-end line (`backtrack_regex(task)`; a task this checkout does not know gets every
registered task's phrases).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from typing import Any, Iterable, Sequence

import pandas as pd

from . import tables as T

MAX_CHARS = 6000          # of one response shown in the report
MAX_QUESTION_CHARS = 1500

_regex_cache: dict[str, re.Pattern] = {}


def backtrack_regex(task: str | None) -> re.Pattern:
    """The task's backtrack markers as a regex: its PAPER_MARKERS and the compact `^` at the end
    of a line (what count_backtracks counts); every task's phrases for an unknown task."""
    from reasoning360.tasks import TASKS, TaskError, get_task
    from reasoning360.tasks.gym import COMPACT_BACKTRACK

    key = task or ""
    if key not in _regex_cache:
        try:
            phrases = set(get_task(task).PAPER_MARKERS)
        except TaskError:
            phrases = {m for name in TASKS for m in get_task(name).PAPER_MARKERS}
        alternatives = [re.escape(m) for m in sorted(phrases, key=len, reverse=True)]
        _regex_cache[key] = re.compile("|".join(alternatives + [re.escape(COMPACT_BACKTRACK) + r"(?=\n)"]))
    return _regex_cache[key]


def highlight(text: Any, pattern: re.Pattern, max_chars: int = MAX_CHARS) -> str:
    """Escaped HTML of `text` with the matches of `pattern` in <mark class="bt">."""
    if text is None or (isinstance(text, float) and text != text):
        return '<span class="missing">(none)</span>'
    s = str(text)
    cut = len(s) > max_chars
    s = s[:max_chars]
    out, pos = [], 0
    for m in pattern.finditer(s):
        if m.end() == m.start():
            continue
        out.append(html.escape(s[pos:m.start()]))
        out.append(f'<mark class="bt">{html.escape(m.group(0))}</mark>')
        pos = m.end()
    out.append(html.escape(s[pos:]))
    if cut:
        out.append(f'<span class="cut">\n... (cut: {len(str(text)) - max_chars} more characters)</span>')
    return "".join(out)


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#1f3a5f;color:#fff;padding:14px 28px}
header h1{margin:0 0 4px 0;font-size:22px} header p{margin:2px 0;font-size:13px;opacity:.9}
nav{padding:8px 28px;background:#e8edf3;font-size:14px;position:sticky;top:0;z-index:2}
nav a{margin-right:16px;color:#1f3a5f;text-decoration:none;font-weight:600}
main{padding:8px 28px 40px 28px;max-width:1500px}
h2{border-bottom:2px solid #1f3a5f;padding-bottom:4px;margin-top:28px;font-size:19px}
h3{font-size:16px;margin:18px 0 6px 0}
table.tbl{border-collapse:collapse;font-size:13px;margin:8px 0;background:#fff}
table.tbl caption{text-align:left;font-weight:600;padding:4px 0;font-size:14px}
table.tbl th,table.tbl td{border:1px solid #d0d7de;padding:4px 9px}
table.tbl th{background:#eef2f6} table.tbl td.r,table.tbl th.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.tbl td.best{font-weight:700;background:#e3f6e8} table.tbl td.missing{color:#999}
ul.notes{font-size:12px;color:#555;margin:4px 0 12px 0}
.state-done{color:#1a7f37}.state-failed{color:#cf222e;font-weight:600}.state-running{color:#9a6700}
.state-not-started,.state-interrupted{color:#6e7781}
.missing-list li{font-size:13px;margin:2px 0}
figure{margin:12px 0 24px 0;background:#fff;border:1px solid #d0d7de;padding:8px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#444;margin-top:6px}
details.point{background:#fff;border:1px solid #d0d7de;margin:6px 0;padding:4px 10px}
details.point>summary{cursor:pointer;font-weight:600;font-size:14px;padding:3px 0}
.sample{border-left:4px solid #999;margin:8px 0;padding:4px 10px;background:#f6f8fa}
.sample.correct{border-color:#2da44e}.sample.incorrect{border-color:#cf222e}
.sample .meta{font-size:12px;color:#444;margin-bottom:3px}
.sample .q{font-size:12px;color:#333;white-space:pre-wrap;margin-bottom:4px}
pre.resp{white-space:pre-wrap;word-break:break-word;font-size:12px;margin:0;background:#fff;
 border:1px solid #e1e4e8;padding:6px;max-height:420px;overflow:auto}
mark.bt{background:#ffd33d;color:#000;border-radius:2px;padding:0 1px;font-weight:600}
.accnote{font-weight:400;color:#555;font-size:13px;margin-left:8px}
.cut{color:#888;font-style:italic} .legend-bt{font-size:13px}
ul.statements li{font-size:15px;margin:4px 0}
ul.notes-key li{font-size:13px;color:#7a4b00;margin:3px 0}
pre.cfg{font-size:12px;background:#fff;border:1px solid #d0d7de;padding:8px;overflow:auto;max-height:500px}
"""


def figure_html(fig, caption: str, fmt: str = "svg") -> str:
    from .plots import to_bytes

    data = getattr(fig, "_r360_svg", None) if fmt == "svg" else None
    data = data or to_bytes(fig, fmt)
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="data:{mime};base64,{b64}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def samples_html(sweep, points: Iterable[str], n: int = 2, roles: Sequence[str] = ("rl_eval", "sft_eval"),
                 seed: int = 0, open_first: int = 2, protocol: str | None = None) -> str:
    """Per point, up to n correct and n incorrect eval traces (after RL, then after SFT), of
    `protocol` (its first sample) when given. The first `open_first` points whose outputs
    contain backtracks start unfolded."""
    points = list(points)
    pts = sweep.points.set_index("point")
    ev = sweep.evals.set_index(["point", "role"]) if not sweep.evals.empty else None
    opened: set[str] = set()
    if ev is not None and open_first > 0:
        e = sweep.evals
        bt = e[(e.role == "rl_eval") & (e.state == "done") & e.point.isin(points)]
        bt = bt.assign(_b=bt["mean_backtracks"].fillna(0) > 0).sort_values("_b", ascending=False, kind="stable")
        opened = set(bt["point"].head(open_first))
    out = []
    for point in points:
        row = pts.loc[point]
        state = str(row["state"])
        parts = []
        for role in roles:
            if ev is None or (point, role) not in ev.index:
                continue
            e = ev.loc[(point, role)]
            if str(e["state"]) != "done":
                parts.append(f'<p class="{_state_class(e["state"])}">{esc(_role_name(role))}: '
                             f'{esc(e["state"])} (no samples)</p>')
                continue
            df = sweep.samples(point, role, n_correct=n, n_incorrect=n, seed=seed, protocol=protocol)
            acc = T.pct(e["accuracy"])
            parts.append(f"<h4>{esc(_role_name(role))}: accuracy {esc(acc)}%, "
                         f"{esc(T.num(e['mean_backtracks']))} backtracks per response</h4>")
            if df.empty:
                parts.append('<p class="missing">no items.parquet</p>')
                continue
            pattern = backtrack_regex(str(row["task"]))
            for _, it in df.iterrows():
                ok = bool(it.get("correct", False))
                meta = [f"item {esc(it.get('index', '?'))}", "correct" if ok else "incorrect"]
                for col, name in (("score", "score"), ("backtracks", "backtracks"),
                                  ("response_tokens", "tokens"), ("format_ok", "format ok")):
                    if col in it and pd.notna(it[col]):
                        meta.append(f"{name} {esc(it[col])}")
                q = it.get("question", None)
                q = "" if q is None or (isinstance(q, float) and q != q) else str(q)
                qtxt = esc(q[:MAX_QUESTION_CHARS] + (" ..." if len(q) > MAX_QUESTION_CHARS else ""))
                parts.append(f'<div class="sample {"correct" if ok else "incorrect"}">'
                             f'<div class="meta">{" &middot; ".join(meta)}</div>'
                             f'<div class="q">{qtxt}</div>'
                             f'<pre class="resp">{highlight(it.get("response"), pattern)}</pre></div>')
        if not parts:
            parts.append(f'<p class="missing">no finished eval ({esc(state)})</p>')
        out.append(f'<details class="point"{" open" if point in opened else ""}><summary>{esc(point)} '
                   f'<span class="{_state_class(state)}">[{esc(state)}]</span>{_acc_note(ev, point)}</summary>{"".join(parts)}</details>')
    return "".join(out)


def _acc_note(ev, point: str) -> str:
    if ev is None:
        return ""
    notes = []
    for role, name in (("sft_eval", "after SFT"), ("rl_eval", "after RL")):
        if (point, role) in ev.index and str(ev.loc[(point, role), "state"]) == "done":
            notes.append(f"{name} {T.pct(ev.loc[(point, role), 'accuracy'])}%")
    return f' <span class="accnote">{esc(", ".join(notes))}</span>' if notes else ""


def _role_name(role: str) -> str:
    return {"rl_eval": "after RL", "sft_eval": "after SFT (before RL)"}.get(role, role)


def page(title: str, subtitle_lines: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:
    """sections: (id, heading, inner html, already escaped / built here)."""
    nav = "".join(f'<a href="#{esc(sid)}">{esc(h)}</a>' for sid, h, _ in sections)
    body = "".join(f'<section id="{esc(sid)}"><h2>{esc(h)}</h2>{inner}</section>' for sid, h, inner in sections)
    sub = "".join(f"<p>{esc(s)}</p>" for s in subtitle_lines)
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{sub}</header><nav>{nav}</nav><main>{body}</main></body></html>\n")


def missing_html(missing: Sequence[str]) -> str:
    if not missing:
        return "<p>Every point finished.</p>"
    return ('<ul class="missing-list">' + "".join(f"<li>{esc(m)}</li>" for m in missing) + "</ul>"
            "<p>Missing points are left out of means and shown as '-', never as 0.</p>")


def config_html(cfg: dict) -> str:
    import yaml

    return f'<details><summary>sweep.yaml</summary><pre class="cfg">{esc(yaml.safe_dump(cfg, sort_keys=False))}</pre></details>'


def stamp() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def legend_html(protocol: str | None = None) -> str:
    which = f" Traces of the {esc(protocol)} protocol (its first sample)." if protocol else ""
    return ('<p class="legend-bt">Backtrack markers are <mark class="bt">highlighted</mark>; '
            f'green = correct, red = incorrect. All model text is escaped.{which}</p>')


def statements_html(statements: Sequence[str], notes: Sequence[str] = (), others: Sequence[str] = ()) -> str:
    """The best-k statements in words (after RL, primary protocol), what a reader must know
    (notes), and the statements for the other protocols and before RL, folded."""
    out = ['<ul class="statements">' + "".join(f"<li>{esc(s)}</li>" for s in statements) + "</ul>"
           if statements else "<p>No finished evals of two or more k yet: nothing to compare.</p>"]
    if notes:
        out.append('<ul class="notes-key">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    if others:
        out.append("<details><summary>Other protocols and before RL</summary><ul class=\"statements\">"
                   + "".join(f"<li>{esc(s)}</li>" for s in others) + "</ul></details>")
    return "".join(out)


def tables_html(displays: Sequence[T.Display]) -> str:
    return "".join(T.to_html(d) for d in displays)


def _state_class(state) -> str:
    """CSS class of a stage state ("not started" -> state-not-started)."""
    return "state-" + esc(str(state).replace(" ", "-"))
