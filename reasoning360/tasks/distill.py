"""`r360 distill`: sample a teacher through an OpenAI-compatible endpoint, grade every
completion with the task's reward, and write correct / incorrect / incorrect_format splits.

    r360 serve CKPT --port 8000 &                         # or any OpenAI-compatible server
    r360 distill --data data/countdown-k0 --split train --base_url http://127.0.0.1:8000/v1 \\
        --n 4 --max_tokens 512 --temperature 1.0 --concurrency 8 --output_dir distill/countdown
    r360 distill ... --rejection --n 8                    # per prompt, keep the first correct

Input: a data directory from the data stage or `r360 data` (DIR/{split}.parquet) or one
parquet file, in verl's schema. Output directory:
  samples.jsonl            one line per (index, sample): the completion, its score (0 / 0.1 / 1),
                           backtracks, finish reason. Append-only, written one whole batch at a
                           time (one write + fsync); a torn last line from a crash is dropped on
                           restart, and (index, sample) pairs already there are never asked again,
                           so a killed run resumes without duplicates.
  correct.parquet          score 1.0     } verl's schema + a `response` column (the completion)
  incorrect.parquet        score 0.1     } and extra_info.backtracks
  incorrect_format.parquet score 0.0     }
  summary.json             counts, accuracy, mean backtracks, settings
Normal mode: every sample of every prompt goes to its split (total = prompts x n).
`--rejection` (Logic-RL style): up to n samples per prompt, asked one at a time, stopping at
the first correct; correct.parquet holds that one, and a prompt with none contributes its first
incorrect and first incorrect_format sample.

HTTP with httpx only (no openai package): POST {base_url}/completions (or /chat/completions
with --endpoint chat). Prompts: the stored prompt text, verbatim (`prompts`: the authors
send the raw prompt to the completions API, sft-data/run_gen.py:88-92); --endpoint chat sends
it as one user message, which the server wraps in its chat template. Completions are graded on
prefill + completion (the row's ground truth holds the prefill). Completions are untrusted:
graded by the task's verifier (bounded in time and size), never evaluated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..atomic import write_json

SAMPLES = "samples.jsonl"
SPLITS = {"correct": 1.0, "incorrect": 0.1, "incorrect_format": 0.0}


# ----------------------------------------------------------------------------- CLI

def configure_distill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR|FILE",
                        help="data directory (DIR/SPLIT.parquet) or a parquet file in verl's schema")
    parser.add_argument("--split", default="train", help="split to read from a data directory (default train)")
    parser.add_argument("--base_url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="model name (default: the server's first, from /models)")
    parser.add_argument("--api_key", default=os.environ.get("OPENAI_API_KEY", "EMPTY"))
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (rejection: at most n)")
    parser.add_argument("--max_tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--batch_size", type=int, default=32, help="prompts per appended batch")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--rejection", action="store_true", help="keep the first correct of up to n samples")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--seed", type=int, default=0, help="per-request seeds derive from it")
    parser.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=3, help="attempts per request on errors")
    parser.add_argument("--quiet", action="store_true")


def cmd_distill(args: argparse.Namespace) -> int:
    if args.n < 1 or args.concurrency < 1 or args.batch_size < 1 or args.max_tokens < 1:
        print("r360 distill: --n, --concurrency, --batch_size and --max_tokens must be >= 1", file=sys.stderr)
        return 2
    try:
        summary = distill(args)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        print(f"r360 distill: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(json.dumps(summary, indent=2))
    return 0


# ----------------------------------------------------------------------------- input

def input_path(data: str, split: str) -> Path:
    p = Path(data).expanduser()
    if p.is_dir():
        for name in (f"{split}.parquet", f"{split}_problems.parquet"):
            if (p / name).exists():
                return p / name
        raise FileNotFoundError(f"{p}: no {split}.parquet (have: "
                                f"{', '.join(sorted(x.name for x in p.glob('*.parquet'))) or 'nothing'})")
    if p.exists():
        return p
    raise FileNotFoundError(f"--data {p}: no such file or directory")


def render(messages: list[dict], tokenizer=None) -> str:
    """The prompt text a row holds, verbatim (no chat template: `prompts`)."""
    from .prompts import prompt_text

    return prompt_text(messages)


def _seed(seed: int, index: int, sample: int) -> int:
    h = hashlib.sha256(f"{seed}:{index}:{sample}".encode()).hexdigest()
    return int(h[:8], 16)


# ----------------------------------------------------------------------------- the log

def read_samples(out_dir: Path) -> dict[tuple[int, int], dict]:
    """(index, sample) -> record; drops a torn last line (and truncates it away)."""
    path = out_dir / SAMPLES
    if not path.exists():
        return {}
    raw = path.read_bytes()
    good_end = raw.rfind(b"\n") + 1               # everything after the last newline is torn
    if good_end != len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    done: dict[tuple[int, int], dict] = {}
    for line in raw[:good_end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        done.setdefault((int(rec["index"]), int(rec["sample"])), rec)
    return done


def append_batch(out_dir: Path, records: list[dict]) -> None:
    """One write of whole lines + fsync: a batch is in the log entirely or (torn) not at all."""
    if not records:
        return
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    fd = os.open(out_dir / SAMPLES, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- HTTP

class Client:
    def __init__(self, base_url: str, model: str | None, api_key: str, timeout: float, retries: int,
                 endpoint: str, concurrency: int):
        import httpx

        self.base = base_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {api_key}"},
                                 limits=httpx.Limits(max_connections=concurrency))
        self.retries, self.endpoint, self.concurrency = max(1, retries), endpoint, concurrency
        self.model = model or self._first_model()

    def _first_model(self) -> str:
        import httpx

        try:
            r = self.http.get(f"{self.base}/models")
            r.raise_for_status()
            models = r.json().get("data") or []
        except (httpx.HTTPError, ValueError) as e:
            raise ConnectionError(f"{self.base}/models: {e} (is the server up? give --model)") from None
        if not models:
            raise ConnectionError(f"{self.base}/models lists no model; give --model")
        return str(models[0]["id"])

    def sample(self, prompt: str, messages: list[dict], n: int, seed: int, a) -> list[tuple[str, str]]:
        """[(text, finish_reason)] of n choices, in choice order."""
        import httpx

        body: dict[str, Any] = {"model": self.model, "n": n, "max_tokens": a.max_tokens,
                                "temperature": a.temperature, "top_p": a.top_p, "seed": seed}
        if self.endpoint == "chat":
            url, body["messages"] = f"{self.base}/chat/completions", messages
        else:
            url, body["prompt"] = f"{self.base}/completions", prompt
        err: Exception | None = None
        for attempt in range(self.retries):
            try:
                r = self.http.post(url, json=body)
                if r.status_code >= 500 or r.status_code == 429:
                    raise httpx.HTTPStatusError(f"{r.status_code}: {r.text[:200]}", request=r.request, response=r)
                if r.status_code >= 400:
                    raise ValueError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
                choices = sorted(r.json()["choices"], key=lambda c: c.get("index", 0))
                out = []
                for c in choices:
                    text = c["message"]["content"] if self.endpoint == "chat" else c["text"]
                    out.append((text or "", c.get("finish_reason") or ""))
                return out
            except (httpx.TransportError, httpx.HTTPStatusError) as e:
                err = e
                time.sleep(min(2 ** attempt, 10))
        raise ConnectionError(f"{url}: {err}")

    def sample_batch(self, requests: list[tuple[int, int, int]], prompts: list[str], rows: list[dict],
                     a) -> list[list[tuple[str, str]]]:
        """The requests in flight `concurrency` at a time, answers in request order."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda r: self.sample(prompts[r[0]], rows[r[0]]["prompt"], r[1], r[2], a),
                                 requests))

    def close(self) -> None:
        self.http.close()


# ----------------------------------------------------------------------------- grading, splits

def grade(row: dict, index: int, sample: int, text: str, finish: str) -> dict:
    from . import count_backtracks, score

    gt = (row.get("reward_model") or {}).get("ground_truth")
    sc = float(score(row["data_source"], text, gt if isinstance(gt, str) else json.dumps(gt)))
    return {"index": index, "sample": sample, "response": text, "finish_reason": finish, "score": sc,
            "backtracks": int(count_backtracks(row["data_source"], text)),
            "data_source": row["data_source"]}


def category(sc: float) -> str:
    return "correct" if sc >= 1.0 else ("incorrect" if sc > 0.0 else "incorrect_format")


def kept_records(rows: list[dict], done: dict[tuple[int, int], dict], rejection: bool) -> list[dict]:
    """The records that go into the splits, in (index, sample) order."""
    if not rejection:
        return [done[k] for k in sorted(done)]
    by_index: dict[int, list[dict]] = {}
    for k in sorted(done):
        by_index.setdefault(k[0], []).append(done[k])
    kept = []
    for i, recs in sorted(by_index.items()):
        correct = [r for r in recs if category(r["score"]) == "correct"]
        if correct:
            kept.append(correct[0])
            continue
        for cat in ("incorrect", "incorrect_format"):
            first = next((r for r in recs if category(r["score"]) == cat), None)
            if first is not None:
                kept.append(first)
    return kept


def write_splits(out_dir: Path, rows: list[dict], kept: list[dict]) -> dict[str, int]:
    from .data import write_rows

    split_rows: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for rec in kept:
        row = rows[rec["index"]]
        extra = dict(row.get("extra_info") or {})
        extra["backtracks"] = rec["backtracks"]
        extra.setdefault("index", rec["index"])
        split_rows[category(rec["score"])].append({
            "data_source": row["data_source"], "prompt": row["prompt"],
            "ability": row.get("ability", "reasoning"), "reward_model": row["reward_model"],
            "extra_info": extra, "response": rec["response"]})
    for name, items in split_rows.items():
        write_rows(out_dir / f"{name}.parquet", items, with_response=True)
    return {name: len(items) for name, items in split_rows.items()}


# ----------------------------------------------------------------------------- main loop

def distill(a: argparse.Namespace) -> dict[str, Any]:
    """The CLI: rows from --data, samples from the OpenAI-compatible server at --base_url."""
    from .data import load_rows

    src = input_path(a.data, a.split)
    rows = load_rows(src)
    if a.limit is not None:
        rows = rows[: a.limit]
    client = Client(a.base_url, a.model, a.api_key, a.timeout, a.retries, a.endpoint, a.concurrency)
    out = Path(a.output_dir).expanduser()
    try:
        summary = distill_rows(rows, [render(r["prompt"]) for r in rows], client, out, a, source=str(src),
                               settings={"base_url": a.base_url, "model": client.model, "endpoint": a.endpoint})
    finally:
        client.close()
    write_json(out / "summary.json", summary)      # (a distill stage's summary is its StageDir's)
    return summary


def distill_rows(rows: list[dict], prompts: list[str], sampler, out: Path, a, *, source: str = "",
                 settings: dict | None = None, progress=None) -> dict[str, Any]:
    """Sample, grade, log and split; the summary. `sampler.sample_batch([(index, n, seed)], prompts,
    rows, a)` returns each request's [(text, finish_reason)]: an HTTP client (`Client`) or an
    in-process engine (the distill stage's builtin backend). `a` carries n, max_tokens,
    temperature, top_p, rejection, batch_size, seed, quiet. `progress(done_prompts, total)` is
    called per batch."""
    out.mkdir(parents=True, exist_ok=True)
    done = read_samples(out)
    resumed = len(done)
    t0 = time.time()
    asked = 0

    def has_correct(i: int) -> bool:
        return any(category(r["score"]) == "correct" for (j, _), r in done.items() if j == i)

    for b0 in range(0, len(rows), a.batch_size):
        idx = list(range(b0, min(b0 + a.batch_size, len(rows))))
        if a.rejection:
            # Round s asks sample s of every prompt of the batch still without a correct one.
            for s in range(a.n):
                todo = [i for i in idx if (i, s) not in done and not has_correct(i)]
                todo = [i for i in todo if all((i, t) in done for t in range(s))]
                if not todo:
                    continue
                res = sampler.sample_batch([(i, 1, _seed(a.seed, i, s)) for i in todo], prompts, rows, a)
                recs = [grade(rows[i], i, s, *r[0]) for i, r in zip(todo, res)]
                append_batch(out, recs)
                done.update({(r["index"], r["sample"]): r for r in recs})
                asked += len(todo)
        else:
            todo = [i for i in idx if any((i, s) not in done for s in range(a.n))]
            if todo:
                res = sampler.sample_batch([(i, a.n, _seed(a.seed, i, 0)) for i in todo], prompts, rows, a)
                recs = []
                for i, choices in zip(todo, res):
                    for s, (text, finish) in enumerate(choices[: a.n]):
                        if (i, s) not in done:
                            recs.append(grade(rows[i], i, s, text, finish))
                append_batch(out, recs)
                done.update({(r["index"], r["sample"]): r for r in recs})
                asked += len(todo)
        if progress is not None:
            progress(idx[-1] + 1, len(rows))
        elif not a.quiet:
            print(f"[distill] {idx[-1] + 1}/{len(rows)} prompts, {len(done)} samples, "
                  f"{time.time() - t0:.0f}s", flush=True)

    kept = kept_records(rows, done, a.rejection)
    counts = write_splits(out, rows, kept)
    scores = [r["score"] for r in done.values()]
    summary = {"input": source, "prompts": len(rows), "samples": len(done), "resumed_samples": resumed,
               "requests": asked, "kept": len(kept), "splits": counts,
               "accuracy": sum(s >= 1.0 for s in scores) / max(len(scores), 1),
               "format_rate": sum(s > 0 for s in scores) / max(len(scores), 1),
               "backtracks_mean": sum(r["backtracks"] for r in done.values()) / max(len(done), 1),
               "prompts_solved": len({i for (i, _), r in done.items() if r["score"] >= 1.0}),
               "seconds": time.time() - t0,
               "settings": {**(settings or {}), "n": a.n, "max_tokens": a.max_tokens,
                            "temperature": a.temperature, "top_p": a.top_p,
                            "rejection": bool(a.rejection), "seed": a.seed}}
    return summary
