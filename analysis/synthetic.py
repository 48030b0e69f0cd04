"""A synthetic sweep directory and store, laid out exactly as the sweeper and engines write
them (plan.json, sweep.yaml, stage dirs with spec.json, metrics.jsonl / metrics.parquet,
summary.json, items.parquet, DONE / FAILED, attempts.jsonl). Test data for the analysis
package, not a mock of a component: the numbers are random but seeded, drawn around known
true accuracies, so a test can check that the statistics find what was put in.

    make_sweep(root, tasks=("countdown",), ks=(0, 1, 2, 3), baselines=("cold_start",),
               seeds=(0, 1, 2), failed={"countdown-k2-s1": "rl"}, running={...}, pending=[...])
    make_sweep(root, seeds=range(5), n_items=1000, protocols=("sample", "greedy"),
               accuracy={"k0": 0.40, "k1": 0.50, ...}, item_sd=1.0, seed_sd=0.1, levels=())

The eval model: item i of a task has a difficulty z_i shared by every point of the sweep (so
points are correlated through the test set, as real ones are), a training run (point, seed)
has an offset b ~ N(0, 1), and P(correct) = sigmoid(logit(acc) + item_sd z_i + seed_sd b
+ shift[protocol]), independently per sample. `accuracy` sets acc per variant after RL,
`sft_accuracy` before RL (default 0.6 x after). Old-format items (no protocol / sample
columns) are written unless `protocols` is given.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import yaml

from reasoning360.sweep.store import StageDir

ROLES = ("data", "traces", "distill", "sft", "sft_eval", "rl", "rl_eval")
KIND = {"data": "data", "traces": "traces", "distill": "distill", "sft": "sft", "sft_eval": "eval", "rl": "rl",
        "rl_eval": "eval"}
# Logit shift of each decoding protocol: greedy decoding is a little more accurate than one sample.
PROTOCOL_SHIFT = {"sample": 0.0, "greedy": 0.3}
BEST_K = {"countdown": 1, "arc_1d": 0, "sudoku": 3, "knights_knaves": 2}
MARKER = "Wait, this doesn't lead to the correct solution."   # countdown's PAPER_MARKERS


def true_accuracy(task: str, k: int | None, baseline: str | None, level: int = 0) -> float:
    """The accuracy the synthetic evals are drawn around: peaked at BEST_K[task]."""
    if baseline:
        base = 0.30
    else:
        best = BEST_K.get(task, 1)
        base = 0.65 - 0.08 * abs(int(k) - best)
    return float(np.clip(base - 0.06 * level, 0.02, 0.98))


def _logit(p: float) -> float:
    p = float(np.clip(p, 1e-4, 1 - 1e-4))
    return math.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def default_sft_examples(variant: str) -> int | None:
    """SFT set sizes of the synthetic sweep: the k sets are equal; the distilled baselines
    differ in size as they do when a teacher's answers are split by verdict."""
    if variant.startswith("k"):
        return 4000
    return {"cold_start": None, "short_cot_correct": 1216, "short_cot_incorrect": 2764,
            "long_cot_correct": 1011, "long_cot_incorrect": 2963, "long_cot_wrong_format": 26}.get(variant, 1000)


def _sid(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_sweep(root: str | Path, *, name: str = "synthetic", tasks: Iterable[str] = ("countdown",),
               ks: Iterable[int] = (0, 1, 2, 3), baselines: Iterable[str] = ("cold_start",),
               seeds: Iterable[int] = (0, 1, 2), axes: Mapping[str, list] | None = None,
               sft_steps: int = 40, rl_steps: int = 30, n_items: int = 40, levels: Iterable[int] = (2, 3, 4),
               failed: Mapping[str, str] | None = None, running: Mapping[str, str] | None = None,
               pending: Iterable[str] = (), parquet: bool = True, items: bool = True,
               text: bool = True, evil_text: bool = False, seed: int = 0,
               store: str | Path | None = None, protocols: Iterable[str] | None = None,
               n_samples: int = 1, accuracy: Mapping[str, float] | None = None,
               sft_accuracy: Mapping[str, float] | None = None, item_sd: float = 0.0,
               seed_sd: float = 0.0, sft_examples: Mapping[str, int] | None = None) -> Path:
    """Write a sweep `name` under root/sweeps and its stages under root/store (or `store`).
    `failed` / `running` map a point name to the role that failed / is still running (later
    roles are left unstarted); `pending` points have nothing run. Baselines other than
    cold_start are SFT-then-RL (a distill stage, SFT, eval, RL, eval). Returns the sweep dir."""
    root = Path(root)
    store = Path(store) if store else root / "store"
    sweep_dir = root / "sweeps" / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    failed, running, pending = dict(failed or {}), dict(running or {}), set(pending)
    rng = np.random.default_rng(seed)
    axes = dict(axes or {})
    import itertools

    axis_combos = [dict(zip(axes, vals)) for vals in itertools.product(*axes.values())] if axes else [{}]
    points, stages = [], {}
    written: set[str] = set()
    levels = list(levels)
    protocols = list(protocols) if protocols is not None else None
    sizes = dict(sft_examples or {})
    for task in tasks:
        z_items = np.random.default_rng([seed, zlib.crc32(task.encode())]).standard_normal(n_items)
        variants = [(k, None) for k in ks] + [(None, b) for b in baselines]
        for (k, baseline), s, combo in itertools.product(variants, seeds, axis_combos):
            variant = f"k{k}" if baseline is None else baseline
            pname = "-".join([task, variant, f"s{s}"] + [f"{a.split('.')[-1]}={v}" for a, v in sorted(combo.items())])
            ids = {"data": _sid("data", task, name, seed)}
            if baseline is None:
                ids["traces"] = _sid("traces", ids["data"], k)
                ids["sft"] = _sid("sft", ids["traces"], s)
            elif baseline != "cold_start":
                ids["distill"] = _sid("distill", ids["data"], baseline)
                ids["sft"] = _sid("sft", ids["distill"], s)
            ids["sft_eval"] = _sid("eval", ids.get("sft") or ("base", ids["data"], s))
            ids["rl"] = _sid("rl", ids["data"], ids.get("sft"), s, combo)
            ids["rl_eval"] = _sid("eval", ids["rl"])
            points.append({"name": pname, "task": task, "k": k, "baseline": baseline, "seed": s,
                           "axes": combo, "stages": ids})
            for role, sid in ids.items():
                st = stages.setdefault(sid, {"kind": KIND[role], "deps": {}, "points": []})
                st["points"].append(pname)
            # what has run for this point
            stop_role, stop_state = None, None
            if pname in pending:
                stop_role, stop_state = "data", "pending"
            elif pname in failed:
                stop_role, stop_state = failed[pname], "failed"
            elif pname in running:
                stop_role, stop_state = running[pname], "running"
            reached_stop = False
            for role in ROLES:
                if role not in ids:
                    continue
                sid = ids[role]
                if role == stop_role:
                    reached_stop = True
                    state = stop_state
                elif reached_stop:
                    state = "pending"
                else:
                    state = "done"
                if sid in written:      # a shared stage (the data) is written once
                    continue
                written.add(sid)
                d = store / sid
                d.mkdir(exist_ok=True)
                StageDir(d).write_record({"kind": KIND[role], "task": task}, {"run_name": pname, "group": name})
                if state == "pending":
                    continue
                offset = float(np.random.default_rng([seed, zlib.crc32(pname.encode())]).standard_normal())
                acc_rl = accuracy[variant] if accuracy and variant in accuracy else true_accuracy(task, k, baseline)
                acc_sft = (sft_accuracy[variant] if sft_accuracy and variant in sft_accuracy else 0.6 * acc_rl)
                examples = sizes[variant] if variant in sizes else default_sft_examples(variant)
                truth = {"acc_rl": acc_rl, "acc_sft": acc_sft, "z": z_items, "item_sd": item_sd,
                         "offset": seed_sd * offset, "protocols": protocols, "n_samples": n_samples,
                         "examples": examples}
                _write_stage(d, role, state, task, k, baseline, s, rng, sft_steps=sft_steps,
                             rl_steps=rl_steps, n_items=n_items, levels=levels, parquet=parquet,
                             items=items, text=text, evil_text=evil_text, truth=truth)
    plan = {"store": str(store.resolve()), "points": points, "stages": stages}
    (sweep_dir / "plan.json").write_text(json.dumps(plan, indent=1))
    cfg = {"sweep": {"name": name}, "seed": 0,
           "model": {"arch": "llama", "hidden_size": 128, "num_layers": 4},
           "engine": {"name": "local"},
           "sft": {"lr": 1e-3, "max_steps": sft_steps, "batch_size": 64},
           "rl": {"lr": 1e-4, "steps": rl_steps, "kl_coef": 0.0, "clip_ratio": 0.2, "rollout": {"n": 8}},
           "eval": {"temperature": 0.0}, "tracking": {"wandb": False}}
    for a, vals in axes.items():
        node = cfg
        *parents, last = a.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = vals[0]
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return sweep_dir


def _write_stage(d: Path, role: str, state: str, task: str, k: int | None, baseline: str | None,
                 seed: int, rng: np.random.Generator, *, sft_steps: int, rl_steps: int, n_items: int,
                 levels: list[int], parquet: bool, items: bool, text: bool, evil_text: bool,
                 truth: dict) -> None:
    t0 = time.time()
    summary: dict[str, Any] = {}
    if role == "sft":
        n = sft_steps if state == "done" else max(1, sft_steps // 2)
        step = np.arange(1, n + 1)
        df = pd.DataFrame({"step": step, "time": t0 + step * 0.1,
                           "loss": 2.5 * np.exp(-step / max(1, sft_steps / 4)) + 0.3 + 0.02 * rng.standard_normal(n),
                           "lr": 1e-3 * np.minimum(1, step / max(1, n / 10)),
                           "tokens_per_s": 5000 + 100 * rng.standard_normal(n),
                           "grad_norm": np.abs(1 + 0.2 * rng.standard_normal(n))})
        _write_metrics(d, df, parquet and state == "done")
        summary = {"final_loss": float(df["loss"].iloc[-1]), "steps": int(n)}
        if truth["examples"] is not None:
            summary["examples"] = int(truth["examples"])
    elif role == "rl":
        n = rl_steps if state == "done" else max(1, rl_steps // 2)
        step = np.arange(1, n + 1)
        acc_end = float(_sigmoid(np.array(_logit(truth["acc_rl"]) + truth["offset"])))
        acc_start = float(_sigmoid(np.array(_logit(truth["acc_sft"]) + truth["offset"])))
        frac = step / max(1, rl_steps)
        acc = acc_start + (acc_end - acc_start) * frac + 0.03 * rng.standard_normal(n)
        bt0 = float(k or 0)
        df = pd.DataFrame({"step": step, "time": t0 + step * 0.5,
                           "reward_mean": 0.1 + 0.9 * np.clip(acc, 0, 1),
                           "reward_std": 0.3 + 0.02 * rng.standard_normal(n),
                           "accuracy": np.clip(acc, 0, 1),
                           "format_rate": np.clip(0.8 + 0.2 * frac + 0.02 * rng.standard_normal(n), 0, 1),
                           "response_length": 80 + 20 * bt0 * (1 - 0.3 * frac) + 3 * rng.standard_normal(n),
                           "backtracks": np.maximum(0, bt0 * (1 - 0.5 * frac) + 0.1 * rng.standard_normal(n)),
                           "pg_loss": 0.01 * rng.standard_normal(n), "clip_frac": np.abs(0.05 * rng.standard_normal(n)),
                           "kl": np.abs(0.001 * step), "entropy": 1.5 - 0.5 * frac,
                           "lr": np.full(n, 1e-4), "rollout_s": 1 + 0.1 * rng.random(n),
                           "train_s": 0.5 + 0.1 * rng.random(n), "tokens_per_s": 3000 + 50 * rng.standard_normal(n)})
        val_every = max(1, rl_steps // 5)
        df["val_accuracy"] = np.where(step % val_every == 0, np.clip(acc, 0, 1), np.nan)
        _write_metrics(d, df, parquet and state == "done")
        summary = {"final_reward": float(df["reward_mean"].iloc[-1]), "steps": int(n)}
    elif role in ("sft_eval", "rl_eval") and state == "done":
        after_rl = role == "rl_eval"
        lv = np.array([levels[i % len(levels)] for i in range(n_items)]) if levels else np.zeros(n_items, int)
        lvl_idx = np.array([levels.index(x) for x in lv]) if levels else np.zeros(n_items, int)
        acc = truth["acc_rl"] if after_rl else truth["acc_sft"]
        base = np.array([_logit(np.clip(acc - 0.06 * li, 0.02, 0.98)) for li in lvl_idx])
        logits = base + truth["item_sd"] * truth["z"] + truth["offset"]
        protocols = truth["protocols"]
        rows = []
        for proto in (protocols or [None]):
            n_s = truth["n_samples"] if proto == "sample" else 1
            shift = PROTOCOL_SHIFT.get(proto, 0.0) if proto else 0.0
            p = _sigmoid(logits + shift)
            for sample in range(n_s):
                rows.append((proto, sample, rng.random(n_items) < p))
        frames = []
        for proto, sample, correct in rows:
            fmt = correct | (rng.random(n_items) < 0.8)
            bt = rng.poisson(max(0.0, (k or 0) * (0.6 if after_rl else 1.0)), n_items)
            tokens = 60 + 25 * bt + rng.integers(0, 20, n_items)
            df = pd.DataFrame({"index": np.arange(n_items), "score": np.where(correct, 1.0, np.where(fmt, 0.1, 0.0)),
                               "correct": correct, "format_ok": fmt, "response_tokens": tokens,
                               "backtracks": bt})
            if proto is not None:
                df.insert(1, "protocol", proto)
                df.insert(2, "sample", sample)
            if levels:
                df["difficulty"] = [json.dumps({"n_people": int(x)}) for x in lv]
            if text:
                at = 3 if proto is not None else 1
                df.insert(at, "question", [f"Q{i}: reach 24 with [3, 8, {i % 10}]" for i in range(n_items)])
                df.insert(at + 1, "prompt", [f"<|user|>Q{i}" for i in range(n_items)])
                df.insert(at + 2, "response", [_response(int(b), bool(c), int(i), evil_text) for i, (b, c) in
                                               enumerate(zip(bt, correct))])
            frames.append(df)
        df = pd.concat(frames, ignore_index=True)
        if items:
            df.to_parquet(d / "items.parquet", index=False)
        primary = df if protocols is None else df[df["protocol"] == ("sample" if "sample" in protocols
                                                                      else protocols[0])]
        summary = {"accuracy": float(primary["correct"].mean()), "format_rate": float(primary["format_ok"].mean()),
                   "mean_response_tokens": float(primary["response_tokens"].mean()),
                   "mean_backtracks": float(primary["backtracks"].mean()), "n": int(n_items)}
    sd = StageDir(d)              # the bookkeeping a real runner leaves (a running one: this process)
    attempt = sd.begin_attempt()
    if state == "failed":
        sd.mark_failed("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                       "RuntimeError: synthetic failure (out of memory)\n")
        sd.end_attempt(attempt, "failed", t0 - 1.0)
    elif state == "done":
        sd.end_attempt(attempt, "done", t0 - 1.0)
        summary["wall_s"] = 1.0
        sd.mark_done(summary)


def _response(bt: int, correct: bool, i: int, evil: bool) -> str:
    lines = ["<think>"]
    for j in range(bt):
        lines.append(f"3+8={11 + j}, {11 + j}!=24")
        lines.append(f"{MARKER} Let me go back to step {j}.")
    lines.append("3*8=24, 24==24" if correct else "3*8=25?")
    lines.append("</think>")
    body = "\n".join(lines) + f"\n<answer>{'3*8' if correct else '3+8'}</answer>"
    if evil and i % 3 == 0:
        body += "\n<script>alert('x')</script><img src=x onerror=alert(1)> & </pre>"
    return body


def _write_metrics(d: Path, df: pd.DataFrame, parquet: bool) -> None:
    with open(d / "metrics.jsonl", "w") as fh:
        for row in df.to_dict("records"):
            fh.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in row.items()}, default=_plain) + "\n")
    if parquet:          # exactly as a finished stage's Tracker writes it
        from reasoning360.tracking import write_metrics_frame

        write_metrics_frame(df, d / "metrics.parquet")


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(type(v))


def make_bench_store(root: str | Path, *, runs: int = 1000, steps: int = 1000, seed: int = 0) -> Path:
    """A sweep of runs/2 points, each with an SFT and an RL stage of `steps` logged steps
    (`runs` training runs in all: a run is one stage, as in wandb), evals with items."""
    root = Path(root)
    n_points = max(1, runs // 2)
    tasks = ["countdown", "arc_1d", "sudoku", "knights_knaves"]
    ks = [0, 1, 2, 3, 5]
    per = n_points // (len(tasks) * len(ks))
    extra = n_points - per * len(tasks) * len(ks)
    seeds = list(range(per + (1 if extra else 0)))
    sweep = make_sweep(root, name="bench", tasks=tasks, ks=ks, baselines=(), seeds=seeds,
                       sft_steps=steps, rl_steps=steps, n_items=64, text=False, seed=seed)
    plan = json.loads((sweep / "plan.json").read_text())
    plan["points"] = plan["points"][:n_points]
    (sweep / "plan.json").write_text(json.dumps(plan))
    return sweep
