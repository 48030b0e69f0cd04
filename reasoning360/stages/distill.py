"""The distill stage: a teacher answers the SFT problems; its graded answers become the SFT
data of the short-CoT and long-CoT baselines (correct / incorrect / incorrect_format).

Same loop as `r360 distill` (tasks/distill.py: grading, the resumable samples.jsonl, the
splits); only where samples come from differs, by `distill.backend`:
  builtin  the local engine's sampler, in this process (CPU or one GPU; the embedded default)
  vllm     `r360 serve TEACHER` started inside the job on a free port, then the HTTP client;
           on a cluster this is one vLLM server per task, one Slurm array task each, as the
           paper's QwQ-32B generation. The server is stopped when the stage ends or fails.
The teacher is an upstream SFT stage of this sweep (`teacher`) or a checkpoint path
(`teacher_path`). A killed stage resumes from samples.jsonl and never asks a prompt twice.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from reasoning360.tasks.distill import Client, distill_rows, input_path, render

from .base import Role, StageKind, engine_runtime

PROMPT_ROOM = 4096      # tokens a served teacher keeps for the prompt beyond the longest answer

# Baselines whose SFT data is a teacher's graded answers to the SFT problems:
# name -> (teacher in distill.teachers, split written by this stage).
DISTILL_BASELINES = {
    "short_cot_correct": ("short_cot", "correct"),
    "short_cot_incorrect": ("short_cot", "incorrect"),
    "long_cot_correct": ("long_cot", "correct"),
    "long_cot_incorrect": ("long_cot", "incorrect"),
    "long_cot_wrong_format": ("long_cot", "incorrect_format"),
}


def teacher_of(c: dict[str, Any], baseline: str) -> dict[str, Any]:
    """The teacher and split of a distill baseline: {"source", "split", "sft_k", "path",
    "max_new_tokens"} from distill.teachers.<source>."""
    source, split = DISTILL_BASELINES[baseline]
    t = c["distill"]["teachers"][source]
    return {"source": source, "split": split, "sft_k": t["sft_k"], "path": t["path"],
            "max_new_tokens": t["max_new_tokens"]}


def teacher_k(c: dict[str, Any], baseline: str | None) -> int | None:
    """The k of the k-backtrack SFT model that teaches `baseline`, when the teacher is this
    sweep's own model (None: not a distill baseline, or a checkpoint path teaches it)."""
    if baseline not in DISTILL_BASELINES:
        return None
    t = teacher_of(c, baseline)
    return None if t["path"] else t["sft_k"]


def spec(c: dict[str, Any], data_id: str, teacher_id: str | None, t: dict[str, Any]) -> dict[str, Any]:
    """A teacher's graded answers to the SFT problems. What changes the samples is hashed;
    how they are fetched (server settings, concurrency) is runtime."""
    d = c["distill"]
    return {"kind": "distill", "task": c["task"]["name"], "data": data_id, "teacher": teacher_id,
            "teacher_path": None if teacher_id else str(Path(str(t["path"])).expanduser().resolve()),
            "source": t["source"], "problems": d["problems"], "backend": d["backend"],
            "batch_size": d["batch_size"],
            "teacher_model": c["model"] if teacher_id else {**c["model"], "path": str(t["path"]),
                                                             "arch": "from_path", "tokenizer": "path"},
            "sampling": {"n": d["n"], "temperature": d["temperature"], "top_p": d["top_p"],
                         "max_new_tokens": t["max_new_tokens"], "rejection": d["rejection"]},
            "seed": c["data"]["seed"]}


def runtime(c: dict[str, Any]) -> dict[str, Any]:
    """How the teacher is run: where (device, threads) and, for a served teacher, the server's
    settings (concurrency, GPUs, start-up timeout, extra vLLM flags)."""
    d = c["distill"]
    return {**engine_runtime(c), "distill": {k: d[k] for k in ("concurrency", "tensor_parallel_size",
                                                                "server_timeout_s", "vllm_args")}}


def build(c: dict[str, Any], p, ids: dict[str, str]) -> dict[str, Any] | None:
    if p.baseline not in DISTILL_BASELINES:
        return None
    return spec(c, ids["data"], ids.get("teacher"), teacher_of(c, p.baseline))


def teacher_dir(spec: dict[str, Any], deps: dict[str, Path]) -> Path:
    if deps.get("teacher"):
        return Path(deps["teacher"]) / "model"
    path = Path(str(spec.get("teacher_path") or "")).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"distill teacher {path}: not a local HF checkpoint directory")
    return path


def settings_of(spec: dict[str, Any]) -> argparse.Namespace:
    s = spec["sampling"]
    return argparse.Namespace(n=int(s["n"]), max_tokens=int(s["max_new_tokens"]),
                              temperature=float(s["temperature"]), top_p=float(s["top_p"]),
                              rejection=bool(s["rejection"]), batch_size=int(spec["batch_size"]),
                              seed=int(spec["seed"]), quiet=True)


class LocalSampler:
    """The local engine's batched KV-cache sampler on the teacher, one generate call per batch."""

    def __init__(self, spec: dict[str, Any], deps: dict[str, Path], runtime: dict[str, Any]):
        from reasoning360.engines.local import data as D
        from reasoning360.engines.local.model import load_policy, setup_runtime

        self.device = setup_runtime(runtime)
        self.model, self.tok = load_policy(spec["teacher_model"], deps.get("teacher"), 0, self.device)
        self.D, self.tokenizer = D, self.tok       # prompts are rendered with it (run_distill)

    def sample_batch(self, requests, prompts, rows, a) -> list[list[tuple[str, str]]]:
        """One generate call for the batch (its requests all ask the same n), seeded by its first
        request, so a rerun of the batch draws the same samples."""
        from reasoning360.rollout.sampler import SamplingParams, generate

        if not requests:
            return []
        n = requests[0][1]
        assert all(r[1] == n for r in requests), "a batch asks the same n of every prompt"
        ids = [self.D.encode_prompt(self.tok, prompts[i]) for i, _, _ in requests]
        sp = SamplingParams(n=n, temperature=a.temperature, top_p=a.top_p, max_new_tokens=a.max_tokens,
                            seed=requests[0][2])
        res = generate(self.model, self.tok, ids, sp)
        return [[(c.text, "stop" if c.finished else "length") for c in comps] for comps in res.completions]

    def close(self) -> None:
        pass


class ServedTeacher:
    """`r360 serve TEACHER` on a free port for the stage's lifetime, and a client to it."""

    def __init__(self, model_dir: Path, stage_dir: Path, runtime: dict[str, Any], max_new_tokens: int):
        from reasoning360.vllm.launch import checkpoint_config, wait_until_serving

        d = runtime["distill"]
        port = _free_port()
        # Room for the prompt and the longest answer (r360 serve's default caps at 8192), within
        # what the model supports.
        max_len = max_new_tokens + PROMPT_ROOM
        mpe = checkpoint_config(model_dir).get("max_position_embeddings")
        if isinstance(mpe, int) and mpe > 0:
            max_len = min(max_len, mpe)
        argv = [sys.executable, "-m", "reasoning360.cli", "serve", str(model_dir), "--port", str(port),
                "--served-model-name", "teacher", "--max-model-len", str(max_len),
                "--tensor-parallel-size", str(int(d["tensor_parallel_size"]))]
        if runtime["device"] != "auto":
            argv += ["--device", str(runtime["device"])]
        if d["vllm_args"]:
            argv += ["--vllm-args", str(d["vllm_args"])]
        self.log = open(stage_dir / "server.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}/v1"
        if not wait_until_serving(url, self.proc, float(d["server_timeout_s"])):
            self.close()
            tail = (stage_dir / "server.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the teacher's vLLM server did not come up (see {stage_dir / 'server.log'}):\n{tail}")
        self.tokenizer = _tokenizer(model_dir)
        self.client = Client(url, "teacher", "EMPTY", timeout=600.0, retries=3, endpoint="completions",
                             concurrency=int(d["concurrency"]))

    def sample_batch(self, requests, prompts, rows, a):
        return self.client.sample_batch(requests, prompts, rows, a)

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.proc.poll() is None:          # the whole session: vLLM's engine processes too
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_distill(ctx) -> dict[str, Any]:
    from reasoning360.progress import progress_bar
    from reasoning360.tasks.data import load_rows

    spec = ctx.spec
    teacher = teacher_dir(spec, ctx.deps)
    src = input_path(str(ctx.deps["data"]), spec["problems"])
    rows = load_rows(src)
    if not rows:
        raise ValueError(f"distill: {src} has no problems (data.sft_size is 0?)")
    a = settings_of(spec)
    if spec["backend"] == "vllm":
        sampler = ServedTeacher(teacher, ctx.stage_dir, ctx.runtime, a.max_tokens)
    else:
        sampler = LocalSampler(spec, ctx.deps, ctx.runtime)
    try:
        prompts = [render(r["prompt"], sampler.tokenizer) for r in rows]
        with progress_bar(f"distill {spec['task']} {spec['source']}", len(rows),
                          enabled=ctx.show_progress) as bar:
            seen = [0]

            def progress(done: int, total: int) -> None:
                bar.advance(done - seen[0])
                seen[0] = done

            summary = distill_rows(rows, prompts, sampler, ctx.stage_dir, a, source=str(src),
                                   settings={"teacher": str(teacher), "backend": spec["backend"]},
                                   progress=progress)
    finally:
        sampler.close()
    tracker = ctx.make_tracker(0)
    tracker.log(0, **{k: summary[k] for k in ("accuracy", "format_rate", "backtracks_mean", "samples")})
    tracker.close()
    return summary


def _tokenizer(model_dir: Path):
    """The teacher's tokenizer, for its chat template (None when it has none to offer)."""
    if not (model_dir / "tokenizer_config.json").exists():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


KIND = StageKind(
    name="distill", inputs={"data": "data", "teacher": "teacher"}, run="reasoning360.stages.distill:run_distill",
    runtime=runtime,
    roles=(Role("distill", ("data", "teacher"), build),))
