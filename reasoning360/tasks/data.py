"""Dataset builders: problems -> verl-style parquet splits, and k-backtrack SFT traces.

`build_data` draws each split from its own derived seeds, in chunks, and de-duplicates by
`Task.key` with priority test > val > train > sft, so no held-out problem reaches a training
split; a split left short draws further chunks (deterministically). `build_traces` turns
`sft_problems.parquet` into `sft.parquet` with a `response` column. Both are pure functions of
their spec: the same spec gives byte-identical files, whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from ..atomic import atomic_path
from ..progress import progress_bar
from .base import Problem, TaskError
from .registry import get_task

SPLITS = ("test", "val", "train", "sft")          # de-duplication priority, highest first
FILES = {"train": "train.parquet", "val": "val.parquet", "test": "test.parquet",
         "sft": "sft_problems.parquet"}
CHUNK = 250                 # problems per generation call (fixed: part of the output's identity)
PARALLEL_MIN = 1000         # use a process pool from this many problems on
MAX_DRY_CHUNKS = 20         # consecutive chunks adding nothing -> the problem space is exhausted
TEMPLATES = ("compact", "base", "qwen-instruct", "baseline")
STYLES = ("compact", "paper")


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
    return Problem(question=extra["question"], answer=extra["answer"],
                   ground_truth=json.loads(row["reward_model"]["ground_truth"]),
                   metadata=json.loads(extra["metadata"]))


def _row(task, problem: Problem, split: str, index: int, template: str) -> dict:
    return {
        "data_source": task.name,
        "prompt": task.prompt(problem, template),
        "ability": "reasoning",
        "reward_model": {"style": "rule",
                         "ground_truth": json.dumps(problem.ground_truth, sort_keys=True)},
        "extra_info": {"split": split, "index": index, "question": problem.question,
                       "answer": problem.answer,
                       "metadata": json.dumps(problem.metadata, sort_keys=True, default=str)},
    }


# ---------------------------------------------------------------- workers (top level: picklable)

def _gen_chunk(args: tuple[str, int, int, dict]) -> list[Problem]:
    name, n, seed, params = args
    return get_task(name).generate(n, seed, params)


def _trace_chunk(args: tuple[str, list[dict], int, str, int]) -> list[str]:
    name, rows, k, style, seed = args
    task = get_task(name)
    out = []
    for row in rows:
        problem = problem_from_row(row)
        rng = random.Random(f"{seed}:{row['extra_info']['index']}:{task.key(problem)}")
        out.append(task.trace(problem, k, style, rng))
    return out


class _Chunks:
    """Ordered chunk results, computed in a pool (or inline) ahead of consumption."""

    def __init__(self, pool: ProcessPoolExecutor | None):
        self.pool, self.pending = pool, {}

    def request(self, key: tuple, args: tuple) -> None:
        if key in self.pending:
            return
        self.pending[key] = self.pool.submit(_gen_chunk, args) if self.pool else args

    def get(self, key: tuple) -> list[Problem]:
        item = self.pending.pop(key)
        return item.result() if self.pool else _gen_chunk(item)


def _check_spec(spec: dict, kind: str, keys: Iterable[str]) -> None:
    if not isinstance(spec, dict) or spec.get("kind") != kind:
        raise TaskError(f"expected a spec with kind={kind!r}, got {str(spec)[:200]}")
    for key in keys:
        if key not in spec:
            raise TaskError(f"{kind} spec: missing key {key!r}")


def build_data(spec: dict, out_dir: Path, show_progress: bool = True) -> dict:
    _check_spec(spec, "data", ("task", "params", "sizes", "template", "seed"))
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
    total = sum(sizes.values())
    chunk_n = {s: min(CHUNK, max(n, 1)) for s, n in sizes.items()}

    def args(split: str, j: int) -> tuple:
        return (task.name, chunk_n[split], derive_seed(seed, task.name, split, j), params)

    workers = min(2, os.cpu_count() or 1)
    pool = ProcessPoolExecutor(workers) if total >= PARALLEL_MIN and workers > 1 else None
    chunks = _Chunks(pool)
    seen: set[str] = set()
    picked: dict[str, list[Problem]] = {}
    dropped = drawn = 0
    try:
        with progress_bar(f"data {task.name}", total, enabled=show_progress) as bar:
            if pool:      # queue every split's first chunks at once; the pool works ahead
                for s in SPLITS:
                    for j in range(-(-sizes[s] // chunk_n[s])):
                        chunks.request((s, j), args(s, j))
            for s in SPLITS:
                out: list[Problem] = []
                j = dry = 0
                while len(out) < sizes[s]:
                    chunks.request((s, j), args(s, j))
                    if pool:     # keep one more chunk in flight
                        chunks.request((s, j + 1), args(s, j + 1))
                    got = chunks.get((s, j))
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
    return {"task": task.name, "counts": {s: len(picked[s]) for s in SPLITS},
            "drawn": drawn, "duplicates_dropped": dropped,
            "seconds": round(time.time() - t0, 3)}


def build_traces(spec: dict, data_dir: Path, out_dir: Path, show_progress: bool = True) -> dict:
    _check_spec(spec, "traces", ("task", "k", "style", "seed"))
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
    parts = [(task.name, rows[i:i + CHUNK], k, style, seed) for i in range(0, len(rows), CHUNK)]
    workers = min(2, os.cpu_count() or 1)
    responses: list[str] = []
    with progress_bar(f"traces {task.name} k={k}", len(rows), enabled=show_progress) as bar:
        if len(rows) >= PARALLEL_MIN and workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for got in pool.map(_trace_chunk, parts):
                    responses += got
                    bar.advance(len(got))
        else:
            for part in parts:
                got = _trace_chunk(part)
                responses += got
                bar.advance(len(got))
    for row, response in zip(rows, responses):
        row["extra_info"]["backtracks"] = k
        row["response"] = response
    write_rows(Path(out_dir) / "sft.parquet", rows, with_response=True)
    lengths = [len(r) for r in responses]
    return {"task": task.name, "k": k, "style": style, "rows": len(rows),
            "mean_response_chars": round(sum(lengths) / max(len(lengths), 1), 1),
            "max_response_chars": max(lengths, default=0),
            "seconds": round(time.time() - t0, 3)}
