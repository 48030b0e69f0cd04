"""Dataset builders: problems -> verl-style parquet splits, and k-backtrack SFT traces.

`build_attempts` turns one split into `pretrain.parquet`: each problem with a few
attempts without search (`Task.attempt`), the corpus a scale=cpu base model is pretrained on.

`build_data` draws each split from its own derived seeds, in chunks, and de-duplicates by
`Task.key` with priority test > val > train > sft, so no held-out problem reaches a training
split; a split left short draws further chunks (deterministically). Each split draws with
`Task.split_params` (dead-end filters only where SFT traces need them; countdown's RL/test
problem set). `build_traces` turns `sft_problems.parquet` into `sft.parquet` with a `response`
column: the trace as the model continues the prompt (a prompt that prefills `<think>` gets the
trace without it).

All three run over `workers` processes (the stage's CPUs, given by the caller) and resume: every
chunk is computed by a pure function of its arguments and written atomically to
`<out_dir>/partial/` as soon as it is done; a rerun after a kill reuses those files, and the
final files are byte-identical to an uninterrupted run's, whatever the number of workers. The
partial directory is removed once the final files are written.

Rows carry the prompt as one message holding the whole prompt text and the prefill in the
ground truth (`prompts` describes the contract).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from ..atomic import atomic_path, write_text
from ..progress import progress_bar
from .base import Problem, TaskError
from .prompts import TEMPLATES, continuation, to_messages
from .registry import get_task

SPLITS = ("test", "val", "train", "sft")          # de-duplication priority, highest first
FILES = {"train": "train.parquet", "val": "val.parquet", "test": "test.parquet",
         "sft": "sft_problems.parquet"}
CHUNK = 250                 # problems per generation call (fixed: part of the output's identity)
PARALLEL_MIN = 1000         # use a process pool from this many problems on (speed only)
MAX_DRY_CHUNKS = 20         # consecutive chunks adding nothing -> the problem space is exhausted
STYLES = ("compact", "paper")
PARTIAL = "partial"         # finished chunks of an unfinished build, inside its output directory
PREFILL_KEY = "prefill"     # the ground truth's copy of the prompt's prefill (prompts.Prompt)
ATTEMPT_SPLITS = ("sft", "train")   # what a pretraining corpus may be made of (build_attempts)
PRETRAIN_FILE = "pretrain.parquet"


def derive_seed(seed: int, *parts: Any) -> int:
    """A 48-bit seed from (seed, parts). reasoning-gym seeds item i with seed + i, so nearby
    seeds overlap; hashed seeds are far apart."""
    h = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()
    return int(h[:12], 16)


def _schema(with_response: bool = False):
    import pyarrow as pa

    extra = [("split", pa.string()), ("index", pa.int64()), ("question", pa.string()),
             ("answer", pa.string()), ("metadata", pa.string())]
    if with_response:
        extra.append(("backtracks", pa.int64()))
    fields = [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct(extra)),
    ]
    if with_response:
        fields.append(("response", pa.string()))
    return pa.schema(fields)


def write_rows(path: Path, rows: list[dict], with_response: bool = False) -> None:
    """Rows -> parquet, atomically, with a fixed schema (no pandas metadata: byte-stable)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=_schema(with_response))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def load_rows(path: str | os.PathLike) -> list[dict]:
    """A parquet written here, back as plain python dicts (prompt: list of role/content dicts)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def problem_from_row(row: dict) -> Problem:
    extra = row["extra_info"]
    gt = json.loads(row["reward_model"]["ground_truth"])
    gt.pop(PREFILL_KEY, None)
    return Problem(question=extra["question"], answer=extra["answer"], ground_truth=gt,
                   metadata=json.loads(extra["metadata"]))


def row_prefill(row: dict) -> str:
    """The prefill a row's prompt ends with ("" for rows written before prefills were stored)."""
    gt = row["reward_model"]["ground_truth"]
    gt = json.loads(gt) if isinstance(gt, str) else gt
    return gt.get(PREFILL_KEY, "")


def _row(task, problem: Problem, split: str, index: int, template: str) -> dict:
    prompt = task.prompt(problem, template)
    if PREFILL_KEY in problem.ground_truth:
        raise TaskError(f"{task.name}: a ground truth may not use the reserved key {PREFILL_KEY!r}")
    return {
        "data_source": task.name,
        "prompt": to_messages(prompt),
        "ability": "reasoning",
        "reward_model": {"style": "rule",
                         "ground_truth": json.dumps({**problem.ground_truth, PREFILL_KEY: prompt.prefill},
                                                    sort_keys=True)},
        "extra_info": {"split": split, "index": index, "question": problem.question,
                       "answer": problem.answer,
                       "metadata": json.dumps(problem.metadata, sort_keys=True, default=str)},
    }


# ---------------------------------------------------------------- chunks (top level: picklable)

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _gen_chunk(args: tuple[str, int, int, dict], path: str) -> str:
    """Generate one chunk of problems and write it to `path` (JSON, atomically)."""
    name, n, seed, params = args
    problems = get_task(name).generate(n, seed, params)
    write_text(path, json.dumps([dataclasses.asdict(p) for p in problems], sort_keys=True, default=str))
    return path


def _trace_chunk(args: tuple[str, list[dict], int, str, int], path: str) -> str:
    """The responses of one chunk of SFT rows, written to `path` (JSON, atomically)."""
    name, rows, k, style, seed = args
    task = get_task(name)
    out = []
    for row in rows:
        problem = problem_from_row(row)
        rng = random.Random(f"{seed}:{row['extra_info']['index']}:{task.key(problem)}")
        out.append(continuation(row_prefill(row), task.trace(problem, k, style, rng)))
    write_text(path, json.dumps(out))
    return path


def _attempt_chunk(args: tuple[str, list[dict], int, str, int], path: str) -> str:
    """`attempts` attempts per row of one chunk, each from its own rng (seed, row index,
    attempt number, problem), with its score: [[response, score], ...] (JSON, atomically)."""
    name, rows, attempts, style, seed = args
    task = get_task(name)
    out = []
    for row in rows:
        problem = problem_from_row(row)
        prefill = row_prefill(row)
        gt = json.loads(row["reward_model"]["ground_truth"])
        gt.pop(PREFILL_KEY, None)
        for a in range(attempts):
            rng = random.Random(f"attempt:{seed}:{row['extra_info']['index']}:{a}:{task.key(problem)}")
            response = continuation(prefill, task.attempt(problem, style, rng))
            out.append([response, task.score(response, gt, prefill)])
    write_text(path, json.dumps(out))
    return path


def _load_problems(path: str) -> list[Problem]:
    return [Problem(**d) for d in json.loads(Path(path).read_text())]


class _Chunks:
    """Chunk results by key: read from a finished chunk file, computed in the pool (ahead of
    consumption) or inline; every result is read back from its file, so a fresh chunk and a
    resumed one are the same bytes."""

    def __init__(self, fn, pool: ProcessPoolExecutor | None, partial: Path, kind: str):
        self.fn, self.pool, self.partial, self.kind = fn, pool, partial, kind
        self.pending: dict[tuple, tuple[str, Any]] = {}
        self.reused = 0

    def path(self, key: tuple, args: tuple) -> Path:
        label = "-".join(str(x) for x in key)
        return self.partial / f"{self.kind}-{label}-{_digest(args)}.json"

    def request(self, key: tuple, args: tuple) -> None:
        if key in self.pending:
            return
        path = self.path(key, args)
        if path.exists():
            self.pending[key] = ("file", str(path))
        elif self.pool is not None:
            self.pending[key] = ("future", self.pool.submit(self.fn, args, str(path)))
        else:
            self.pending[key] = ("args", (args, str(path)))

    def get(self, key: tuple) -> str:
        how, item = self.pending.pop(key)
        if how == "file":
            self.reused += 1
            return item
        if how == "future":
            return item.result()
        return self.fn(*item)


def _run_parts(fn, parts: list[tuple], out_dir: Path, kind: str, label: str, total: int,
               workers: int, show_progress: bool) -> tuple[list, int]:
    """Every part (a chunk of rows) through `fn`, over a pool when it pays, resumable from
    `out_dir/partial/`: the concatenated results in part order, and how many chunks were reused."""
    pool = _pool(workers, total)
    chunks = _Chunks(fn, pool, Path(out_dir) / PARTIAL, kind)
    results: list = []
    try:
        with progress_bar(label, total, enabled=show_progress) as bar:
            for j, part in enumerate(parts):
                chunks.request((j,), part)
            for j in range(len(parts)):
                got = json.loads(Path(chunks.get((j,))).read_text())
                results += got
                bar.advance(len(got))
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return results, chunks.reused


def _pool(workers: int, total: int) -> ProcessPoolExecutor | None:
    return ProcessPoolExecutor(workers) if workers > 1 and total >= PARALLEL_MIN else None


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise TaskError(f"workers must be a positive integer (the stage's CPUs), got {workers!r}")
    return workers


def _check_spec(spec: dict, kind: str, keys: Iterable[str]) -> None:
    if not isinstance(spec, dict) or spec.get("kind") != kind:
        raise TaskError(f"expected a spec with kind={kind!r}, got {str(spec)[:200]}")
    for key in keys:
        if key not in spec:
            raise TaskError(f"{kind} spec: missing key {key!r}")


def build_data(spec: dict, out_dir: Path, show_progress: bool = True, workers: int = 1) -> dict:
    """The data stage: train / val / test / sft_problems parquet files in `out_dir`, generated
    over `workers` processes (the stage's CPUs; 1 = in this process) and resumable."""
    _check_spec(spec, "data", ("task", "params", "sizes", "template", "seed"))
    workers = _check_workers(workers)
    t0 = time.time()
    task = get_task(spec["task"])
    params, seed, template = dict(spec["params"] or {}), spec["seed"], spec["template"]
    task.validate_params(params)
    if template not in TEMPLATES:
        raise TaskError(f"data spec: unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    sizes = {s: spec["sizes"].get(s, 0) for s in SPLITS}
    for s, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise TaskError(f"data spec: sizes.{s} must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TaskError(f"data spec: seed must be an integer, got {seed!r}")
    out_dir = Path(out_dir)
    partial = out_dir / PARTIAL
    total = sum(sizes.values())
    chunk_n = {s: min(CHUNK, max(n, 1)) for s, n in sizes.items()}
    split_params = {s: task.split_params(params, s) for s in SPLITS}
    for p in split_params.values():
        task.validate_params(p)

    def args(split: str, j: int) -> tuple:
        return (task.name, chunk_n[split], derive_seed(seed, task.name, split, j), split_params[split])

    pool = _pool(workers, total)
    chunks = _Chunks(_gen_chunk, pool, partial, "data")
    seen: set[str] = set()
    picked: dict[str, list[Problem]] = {}
    dropped = drawn = 0
    try:
        with progress_bar(f"data {task.name}", total, enabled=show_progress) as bar:
            for s in SPLITS:     # queue every split's first chunks at once; the pool works ahead
                for j in range(-(-sizes[s] // chunk_n[s])):
                    chunks.request((s, j), args(s, j))
            for s in SPLITS:
                out: list[Problem] = []
                j = dry = 0
                while len(out) < sizes[s]:
                    chunks.request((s, j), args(s, j))
                    if pool:     # keep one more chunk in flight
                        chunks.request((s, j + 1), args(s, j + 1))
                    got = _load_problems(chunks.get((s, j)))
                    drawn += len(got)
                    before = len(out)
                    for p in got:
                        if len(out) >= sizes[s]:
                            break
                        key = task.key(p)
                        if key in seen:
                            dropped += 1
                            continue
                        seen.add(key)
                        out.append(p)
                    bar.advance(len(out) - before)
                    dry = dry + 1 if len(out) == before else 0
                    if dry >= MAX_DRY_CHUNKS:
                        raise TaskError(f"{task.name}: only {len(seen)} distinct problems at "
                                        f"params {params}; the splits ask for {total}")
                    j += 1
                picked[s] = out
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    for s in SPLITS:
        rows = [_row(task, p, s, i, template) for i, p in enumerate(picked[s])]
        write_rows(out_dir / FILES[s], rows)
    shutil.rmtree(partial, ignore_errors=True)
    return {"task": task.name, "counts": {s: len(picked[s]) for s in SPLITS},
            "drawn": drawn, "duplicates_dropped": dropped, "chunks_reused": chunks.reused,
            "workers": workers, "seconds": round(time.time() - t0, 3)}


def build_traces(spec: dict, data_dir: Path, out_dir: Path, show_progress: bool = True,
                 workers: int = 1) -> dict:
    """The traces stage: `sft.parquet` (the SFT problems + a `response` with exactly k dead
    ends), over `workers` processes and resumable like `build_data`."""
    _check_spec(spec, "traces", ("task", "k", "style", "seed"))
    workers = _check_workers(workers)
    t0 = time.time()
    task = get_task(spec["task"])
    k, style, seed = spec["k"], spec["style"], spec["seed"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise TaskError(f"traces spec: k must be a non-negative integer, got {k!r}")
    if style not in STYLES:
        raise TaskError(f"traces spec: unknown style {style!r}; known: {', '.join(STYLES)}")
    if not task.backtrack_sft:
        raise TaskError(f"task {task.name!r} has no backtrack traces (RL-only)")
    src = Path(data_dir) / FILES["sft"]
    if not src.exists():
        raise TaskError(f"traces: {src} does not exist (build the data stage first)")
    rows = load_rows(src)
    if style == "compact" and any(row_prefill(r) for r in rows[:1]):
        raise TaskError("traces: compact traces answer in the compact format, which only the compact "
                        "template asks for (data.template=compact, or trace_style=paper)")
    out_dir = Path(out_dir)
    parts = [(task.name, rows[i:i + CHUNK], k, style, seed) for i in range(0, len(rows), CHUNK)]
    responses, reused = _run_parts(_trace_chunk, parts, out_dir, "traces", f"traces {task.name} k={k}",
                                   len(rows), workers, show_progress)
    for row, response in zip(rows, responses):
        row["extra_info"]["backtracks"] = k
        row["response"] = response
    write_rows(out_dir / "sft.parquet", rows, with_response=True)
    shutil.rmtree(out_dir / PARTIAL, ignore_errors=True)
    lengths = [len(r) for r in responses]
    return {"task": task.name, "k": k, "style": style, "rows": len(rows),
            "mean_response_chars": round(sum(lengths) / max(len(lengths), 1), 1),
            "max_response_chars": max(lengths, default=0), "chunks_reused": reused,
            "workers": workers, "seconds": round(time.time() - t0, 3)}


def build_attempts(spec: dict, data_dir: Path, out_dir: Path, show_progress: bool = True,
                   workers: int = 1) -> dict:
    """The pretraining corpus of a base model at scale=cpu: `pretrain.parquet`, the problems of
    one data split (`spec["split"]`: sft, or train for RL-only tasks, whose data stage draws no
    SFT problems) with `spec["attempts"]` attempts each (`Task.attempt`: one candidate without
    search, its verdict, its own answer; extra_info.backtracks = 0), in sft.parquet's schema,
    rows in problem order then attempt order. Over `workers` processes and resumable, the same
    bytes for any number of workers, like `build_traces`; the summary gives the share of correct
    attempts (score 1.0) and of well-formed ones (score > 0)."""
    _check_spec(spec, "pretrain", ("task", "split", "attempts", "style", "seed"))
    workers = _check_workers(workers)
    t0 = time.time()
    task = get_task(spec["task"])
    split, attempts, style, seed = spec["split"], spec["attempts"], spec["style"], spec["seed"]
    if split not in ATTEMPT_SPLITS:
        raise TaskError(f"pretrain spec: split must be one of {', '.join(ATTEMPT_SPLITS)}, got {split!r}")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise TaskError(f"pretrain spec: attempts must be a positive integer, got {attempts!r}")
    if style not in STYLES:
        raise TaskError(f"pretrain spec: unknown style {style!r}; known: {', '.join(STYLES)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TaskError(f"pretrain spec: seed must be an integer, got {seed!r}")
    src = Path(data_dir) / FILES[split]
    if not src.exists():
        raise TaskError(f"pretrain: {src} does not exist (build the data stage first)")
    rows = load_rows(src)
    if not rows:
        raise TaskError(f"pretrain: {src} has no problems (split={split}; an RL-only task's data stage "
                        "draws no SFT problems: split=train)")
    if style == "compact" and row_prefill(rows[0]):
        raise TaskError("pretrain: compact attempts answer in the compact format, which only the compact "
                        "template asks for (data.template=compact, or style=paper)")
    out_dir = Path(out_dir)
    parts = [(task.name, rows[i:i + CHUNK], attempts, style, seed) for i in range(0, len(rows), CHUNK)]
    got, reused = _run_parts(_attempt_chunk, parts, out_dir, "attempts", f"attempts {task.name}",
                             len(rows) * attempts, workers, show_progress)
    out = []
    for i, row in enumerate(rows):
        for a in range(attempts):
            response = got[i * attempts + a][0]
            out.append({**row, "extra_info": {**row["extra_info"], "backtracks": 0}, "response": response})
    write_rows(out_dir / PRETRAIN_FILE, out, with_response=True)
    shutil.rmtree(out_dir / PARTIAL, ignore_errors=True)
    scores = [s for _, s in got]
    lengths = [len(r) for r, _ in got]
    return {"task": task.name, "split": split, "style": style, "problems": len(rows), "attempts": attempts,
            "rows": len(out), "correct_share": round(sum(s == 1.0 for s in scores) / len(scores), 4),
            "well_formed_share": round(sum(s > 0 for s in scores) / len(scores), 4),
            "mean_response_chars": round(sum(lengths) / len(lengths), 1),
            "max_response_chars": max(lengths), "chunks_reused": reused,
            "workers": workers, "seconds": round(time.time() - t0, 3)}
