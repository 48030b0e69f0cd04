"""`r360 distill` against a stand-in OpenAI-compatible server (stdlib http.server on 127.0.0.1):
grading into correct / incorrect / incorrect_format, rejection mode, resume without duplicates
(a killed run, a torn last line). The real vLLM server is exercised in tests/test_vllm_serve.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]


def _data(tmp_path: Path, n: int = 12) -> Path:
    from reasoning360.tasks import get_task
    from reasoning360.tasks.data import _row, write_rows

    task = get_task("countdown")
    params = {"min_numbers": 3, "max_numbers": 3, "min_value": 1, "max_value": 20, "min_target": 10,
              "max_target": 100}
    d = tmp_path / "data"
    d.mkdir()
    rows = [_row(task, p, "train", i, "compact") for i, p in enumerate(task.generate(n, 0, params))]
    write_rows(d / "train.parquet", rows)
    return d


class FakeServer:
    """Answers /v1/completions: choice j of prompt P is malformed, wrong or correct by a rule
    (the request's seed picks the start), so every split gets rows. Optional delay per request."""

    def __init__(self, answers: dict[str, str], delay: float = 0.0):
        self.answers, self.delay, self.requests = answers, delay, 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, obj, code=200):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                time.sleep(outer.delay)
                ans = outer.answers[body["prompt"]]
                kinds = ["garbage <answer>", "<think>try</think>\n<answer>1+1</answer>",
                         f"<think>Step 1: 1 + 1 = 2. Wait, this doesn't lead to the correct solution. Let me restart.\nok</think>\n<answer>{ans}</answer>"]
                start = body.get("seed", 0) % 3
                choices = [{"index": j, "text": kinds[(start + j) % 3], "finish_reason": "stop"}
                           for j in range(body.get("n", 1))]
                self._send({"object": "text_completion", "model": body["model"], "choices": choices})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    from reasoning360.tasks import load_rows

    data = _data(tmp_path)
    rows = load_rows(data / "train.parquet")
    srv = FakeServer({"".join(m["content"] for m in r["prompt"]): r["extra_info"]["answer"] for r in rows})
    yield data, rows, srv
    srv.close()


def _run(data, url, out, *extra) -> int:
    from reasoning360.cli import main

    return main(["distill", "--data", str(data), "--base_url", url, "--output_dir", str(out), "--quiet",
                 *extra])


def _keys(out: Path) -> list[tuple[int, int]]:
    return [(r["index"], r["sample"]) for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())]


def test_distill_grades_and_writes_three_splits(served, tmp_path):
    data, rows, srv = served
    out = tmp_path / "out"
    assert _run(data, srv.url, out, "--n", "3", "--batch_size", "5", "--concurrency", "3") == 0
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == len(rows) * 3
    sizes = {}
    for split, want in (("correct", 1.0), ("incorrect", 0.1), ("incorrect_format", 0.0)):
        t = pq.read_table(out / f"{split}.parquet")
        assert {"data_source", "prompt", "ability", "reward_model", "extra_info", "response"} <= set(t.column_names)
        sizes[split] = t.num_rows
        from reasoning360.tasks import score

        for r in t.to_pylist():
            assert score(r["data_source"], r["response"], r["reward_model"]["ground_truth"]) == want
            assert r["extra_info"]["backtracks"] == (1 if want == 1.0 else 0)
    assert sizes == {"correct": len(rows), "incorrect": len(rows), "incorrect_format": len(rows)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == len(rows) * 3 and summary["settings"]["model"] == "fake-model"
    assert summary["accuracy"] == pytest.approx(1 / 3)
    # A rerun asks nothing and changes nothing.
    before = (out / "samples.jsonl").read_bytes()
    n_req = srv.requests
    assert _run(data, srv.url, out, "--n", "3") == 0
    assert srv.requests == n_req and (out / "samples.jsonl").read_bytes() == before


def test_rejection_keeps_the_first_correct(served, tmp_path):
    data, rows, srv = served
    out = tmp_path / "rej"
    assert _run(data, srv.url, out, "--n", "4", "--rejection") == 0
    recs = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    by = {}
    for r in recs:
        by.setdefault(r["index"], []).append(r)
    solved = unsolved_cats = 0
    for i, rs in by.items():
        rs.sort(key=lambda r: r["sample"])
        assert [r["sample"] for r in rs] == list(range(len(rs)))     # asked one at a time
        assert all(r["score"] < 1.0 for r in rs[:-1])               # stopped at the first correct
        if rs[-1]["score"] == 1.0:
            solved += 1
        else:
            assert len(rs) == 4                                     # n tries, none correct
            unsolved_cats += len({r["score"] for r in rs})
    assert len(by) == len(rows) and solved > 0
    assert pq.read_table(out / "correct.parquet").num_rows == solved
    assert (pq.read_table(out / "incorrect.parquet").num_rows
            + pq.read_table(out / "incorrect_format.parquet").num_rows) == unsolved_cats
    assert json.loads((out / "summary.json").read_text())["prompts_solved"] == solved


def test_torn_last_line_is_dropped_and_redone(served, tmp_path):
    data, rows, srv = served
    out = tmp_path / "torn"
    assert _run(data, srv.url, out, "--n", "2", "--limit", "4") == 0
    p = out / "samples.jsonl"
    text = p.read_text()
    lines = text.splitlines(keepends=True)
    p.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])     # a crash mid-write
    assert _run(data, srv.url, out, "--n", "2", "--limit", "4") == 0
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 8


def test_killed_run_resumes_without_duplicates(served, tmp_path):
    data, rows, srv = served
    srv.delay = 0.15
    out = tmp_path / "kill"
    cmd = [sys.executable, "-m", "reasoning360.cli", "distill", "--data", str(data), "--base_url", srv.url,
           "--output_dir", str(out), "--n", "2", "--batch_size", "2", "--concurrency", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "samples.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 4):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    partial = len(_keys(out))
    assert 4 <= partial < len(rows) * 2, partial
    srv.delay = 0.0
    assert _run(data, srv.url, out, "--n", "2") == 0
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == len(rows) * 2


def test_bad_input_fails_in_one_line(tmp_path, capsys):
    assert _run(tmp_path / "nope", "http://127.0.0.1:9/v1", tmp_path / "o") == 2
    assert "no such file" in capsys.readouterr().err
