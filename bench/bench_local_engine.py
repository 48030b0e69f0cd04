"""Throughput of the local engine: SFT tokens/s, rollout tokens/s (vs model.generate), GRPO step split.

    python bench/bench_local_engine.py [--traces DIR] [--data DIR] [--model DIR] [--threads N]

--traces: a traces stage dir (sft.parquet); --data: a data stage dir (train.parquet);
--model: an HF model dir (e.g. an SFT stage's model/) for rollouts that stop like a trained
model does; without it a seeded random tiny model is used (it rarely emits EOS, so rollouts
run to the length limit). Without --traces/--data a small 3-number countdown set is built
with reasoning360.tasks in a temp dir. Numbers are wall-clock on whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import statistics
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from reasoning360.engines.context import StageContext  # noqa: E402
from reasoning360.engines.local import data as D  # noqa: E402
from reasoning360.engines.local.grpo import run_grpo  # noqa: E402
from reasoning360.engines.local.model import load_policy  # noqa: E402
from reasoning360.rollout.sampler import SamplingParams, generate  # noqa: E402
from reasoning360.engines.local.sft import make_optimizer, sft_step  # noqa: E402
from reasoning360.tracking import Tracker, read_metrics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CPU_PARAMS, cfg, setup  # noqa: E402


def build_data(tmp: Path) -> tuple[Path, Path]:
    from reasoning360.tasks import build_data, build_traces

    spec = {"kind": "data", "task": "countdown", "params": CPU_PARAMS, "template": "compact", "seed": 0,
            "sizes": {"sft": 1000, "train": 256, "val": 16, "test": 16}}
    build_data(spec, tmp / "data", show_progress=False)
    build_traces({"kind": "traces", "task": "countdown", "k": 0, "style": "compact", "seed": 0},
                 tmp / "data", tmp / "traces", show_progress=False)
    return tmp / "traces", tmp / "data"


def bench_sft(model_cfg, traces: Path, device, steps: int) -> dict:
    model, tok = load_policy(model_cfg, None, 0, device)
    ex, _ = D.encode_sft(tok, D.read_rows(traces / "sft.parquet"), 384)
    opt = make_optimizer(model, {"lr": 1e-3})
    model.train()
    ex.sort(key=lambda e: len(e.ids))          # length-bucketed batches, as the trainer makes them
    batches = [ex[i:i + 64] for i in range(0, len(ex) - 63, 64)]
    toks, t = 0, 0.0
    for i in range(steps + 3):
        b = batches[(i * 7) % len(batches)]
        t0 = time.perf_counter()
        sft_step(model, b, tok.pad_token_id, 64, device)
        opt.step()
        opt.zero_grad()
        if i >= 3:
            t += time.perf_counter() - t0
            toks += sum(len(e.ids) for e in b)
    return {"sft_tokens_per_s": toks / t, "sft_ms_per_step": 1000 * t / steps,
            "sft_tokens_per_step": toks / steps}


def useful_tokens(rows, eos: int) -> int:
    return sum((r.index(eos) + 1) if eos in r else len(r) for r in rows)


def bench_rollout(model_cfg, data: Path, device, batch: int, max_new: int, repeats: int = 3) -> dict:
    model, tok = load_policy(model_cfg, None, 0, device)
    rows = D.read_rows(data / "train.parquet")
    prompts = [D.encode_prompt(tok, D.render_prompt(tok, rows[i % len(rows)]["prompt"])) for i in range(batch)]
    sp = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=max_new, seed=0)
    generate(model, tok, prompts[:8], sp)                               # warm-up
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt").to(device)
    t_mine, t_gen = [], []                      # median of `repeats` runs each: a shared machine is noisy
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = generate(model, tok, prompts, sp)
        t_mine.append(time.perf_counter() - t0)
        with torch.inference_mode():
            t0 = time.perf_counter()
            g = model.generate(**enc, max_new_tokens=max_new, do_sample=True, temperature=1.0, top_p=1.0,
                               top_k=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            t_gen.append(time.perf_counter() - t0)
    t_mine, t_gen = statistics.median(t_mine), statistics.median(t_gen)
    mine = out.stats["tokens"]
    ref = useful_tokens(g[:, enc["input_ids"].shape[1]:].tolist(), tok.eos_token_id)
    return {"rollout_batch": batch, "sampler_tokens": mine, "sampler_s": t_mine,
            "sampler_tokens_per_s": mine / t_mine, "generate_tokens": ref, "generate_s": t_gen,
            "generate_tokens_per_s": ref / t_gen,
            "speedup": (mine / t_mine) / (ref / t_gen),
            "mean_response_tokens": mine / batch}


def bench_grpo(model_cfg, data: Path, runtime: dict, steps: int, tmp: Path) -> dict:
    rl = cfg("rl/grpo")
    rl.update({"steps": steps, "save_every": 0, "val_every": 0})
    spec = {"kind": "rl", "engine": "local", "task": "countdown", "data": "d", "init": None,
            "model": model_cfg, "rl": rl, "rollout_backend": "builtin", "seed": 0}
    sd = tmp / "grpo"
    deps = {"data": data}
    ctx = StageContext(stage_dir=sd, spec=spec, runtime=runtime, deps=deps,
                       make_tracker=lambda s: Tracker(sd, resume_step=s), show_progress=False)
    run_grpo(ctx)
    rows = read_metrics(sd)
    avg = lambda k: sum(r[k] for r in rows) / len(rows)
    return {"grpo_prompts": rl["batch_size"], "grpo_n": rl["rollout"]["n"],
            "grpo_max_new_tokens": rl["rollout"]["max_new_tokens"], "grpo_steps": len(rows),
            "grpo_rollout_s": avg("rollout_s"), "grpo_train_s": avg("train_s"), "grpo_step_s": avg("step_s"),
            "grpo_response_len": avg("response_length_mean"), "grpo_reward_mean": avg("reward_mean")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--model", type=Path, help="HF model dir for rollout/GRPO (default: random tiny)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--sft-steps", type=int, default=20)
    ap.add_argument("--grpo-steps", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list of sft,rollout,grpo to skip")
    a = ap.parse_args()
    runtime, device, model_cfg, skip = setup(a)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        traces, data = a.traces, a.data
        if traces is None or data is None:
            traces, data = build_data(tmp)
        out = {"device": str(device), "threads": torch.get_num_threads(),
               "model": str(a.model) if a.model else "random tiny"}
        if "sft" not in skip:
            out.update(bench_sft({**model_cfg, "path": None}, traces, device, a.sft_steps))
            print(json.dumps(out, indent=1), flush=True)
        if "rollout" not in skip:
            out.update(bench_rollout(model_cfg, data, device, 256, 192))
            print(json.dumps(out, indent=1), flush=True)
        if "grpo" not in skip:
            out.update(bench_grpo(model_cfg, data, runtime, a.grpo_steps, tmp))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
