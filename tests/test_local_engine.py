"""The local engine end to end on a small countdown-like fixture (no downloads, ~1 min on 2 cores).

Mechanics, not quality: a smaller-than-tiny model keeps the file fast. Quality at the real
scale is measured by bench/bench_local_engine.py and the smoke sweep.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import re
from pathlib import Path

import reasoning360.engines.local as local          # first: sets OMP_WAIT_POLICY before torch loads
import numpy as np
import pandas as pd
import pytest
import torch

from reasoning360.engines.context import Preempted, StageContext
from reasoning360.engines.local import checkpoint as ckpt
from reasoning360.engines.local import data as D
from reasoning360.engines.local.model import load_policy, setup_runtime
from reasoning360.rollout.sampler import SamplingParams, generate, sequence_logprobs
from reasoning360.engines.local.tokenizer import TAGS, build_char_tokenizer
from reasoning360.tracking import Tracker, read_metrics

from compose import resolved

CONFIG = resolved("model=tiny")         # the configs' own values: tests override, never invent
MODEL = {**CONFIG["model"], "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128,
         "max_seq_len": 256}
RUNTIME = {"device": "cpu", "threads": 2, "rollout_workers": 0, "rollout_threads_per_worker": 1}


def rl_cfg(rollout: dict | None = None, **over) -> dict:
    """configs/rl/grpo.yaml with the test's changes (validation off unless asked)."""
    rl = {k: v for k, v in CONFIG["rl"].items() if k != "init_step"}    # the planner moves it to the spec
    return {**rl, "val_every": 0, **over, "rollout": {**CONFIG["rl"]["rollout"], **(rollout or {})}}


def eval_cfg(**over) -> dict:
    return {**CONFIG["eval"], **over}
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


# ----------------------------------------------------------------------------- fixture data

def _problem(rng: random.Random):
    while True:
        a, b, c = (rng.randint(1, 20) for _ in range(3))
        o1, o2 = rng.choice("+-*"), rng.choice("+-*")
        v1 = OPS[o1](a, b)
        t = OPS[o2](v1, c)
        if 10 <= t <= 100 and v1 > 0:
            nums = sorted([a, b, c])
            prompt = f"{' '.join(map(str, nums))}>{t}\n"
            resp = f"<think>{a}{o1}{b}={v1},{v1}{o2}{c}={t}=={t}</think>\n<answer>({a}{o1}{b}){o2}{c}</answer>"
            return nums, t, prompt, resp, f"({a}{o1}{b}){o2}{c}"


def _rows(n: int, split: str, seed: int, with_response: bool) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        nums, t, prompt, resp, ans = _problem(rng)
        row = {"data_source": "countdown", "prompt": [{"role": "user", "content": prompt}],
               "ability": "reasoning",
               "reward_model": {"style": "rule", "ground_truth": json.dumps({"numbers": nums, "target": t})},
               "extra_info": {"split": split, "index": i, "question": f"Use {nums} to make {t}.",
                              "answer": ans, "metadata": json.dumps({"difficulty": {"numbers": 3}})}}
        if with_response:
            row["response"] = resp
        rows.append(row)
    return rows


def _stub_score(data_source: str, completion: str, ground_truth: str) -> float:
    """Exact countdown scorer for the fixture: 0 malformed, 0.1 wrong, 1 correct (no eval)."""
    m = re.search(r"<answer>(.*?)</answer>", completion, re.S)
    if not m or not re.fullmatch(r"[0-9+\-*() ]+", m.group(1).strip() or "x"):
        return 0.0
    gt = json.loads(ground_truth)
    try:
        tree = ast.parse(m.group(1).strip(), mode="eval")
    except SyntaxError:
        return 0.0

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
            return {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}[type(node.op)](
                ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError

    try:
        value = ev(tree)
    except (ValueError, RecursionError):
        return 0.0
    used = sorted(int(x) for x in re.findall(r"\d+", m.group(1)))
    return 1.0 if used == sorted(gt["numbers"]) and value == gt["target"] else 0.1


def _stub_backtracks(data_source: str, completion: str) -> int:
    return completion.count("^")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    pd.DataFrame(_rows(600, "sft", 1, True)).to_parquet(d / "sft.parquet")
    for split, n, seed in (("train", 64, 2), ("val", 16, 3), ("test", 24, 4)):
        pd.DataFrame(_rows(n, split, seed, False)).to_parquet(d / f"{split}.parquet")
    return d


@pytest.fixture
def stub_scorer(monkeypatch):
    monkeypatch.setattr(D, "task_fns", lambda: (_stub_score, _stub_backtracks))


def make_ctx(stage_dir: Path, spec: dict, deps: dict, on_log=None) -> StageContext:
    def make_tracker(step: int) -> Tracker:
        tr = Tracker(stage_dir, resume_step=step)
        if on_log is not None:
            log = tr.log

            def wrapped(s, **m):
                log(s, **m)
                on_log(ctx, s)
            tr.log = wrapped
        return tr

    stage_dir.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(stage_dir=stage_dir, spec=spec, runtime=dict(RUNTIME), deps=deps,
                       make_tracker=make_tracker, show_progress=False)
    return ctx


def sft_spec(**over) -> dict:
    sft = {**CONFIG["sft"], "lr": 1e-2, "batch_size": 32, "max_steps": 120, "warmup_ratio": 0.1, "schedule": "cosine",
           "weight_decay": 0.0, "grad_clip": 1.0, "save_every": 60, "max_len": 128}
    sft.update(over)
    return {"kind": "sft", "engine": "local", "task": "countdown", "traces": "t", "data": "d",
            "model": dict(MODEL), "sft": sft, "seed": 0}


@pytest.fixture(scope="module")
def sft_stage(dataset, tmp_path_factory) -> Path:
    sd = tmp_path_factory.mktemp("sft")
    summary = local.run_sft(make_ctx(sd, sft_spec(), {"traces": dataset, "data": dataset}))
    assert summary["steps"] == 120 and summary["examples"] == 600
    return sd


# ----------------------------------------------------------------------------- tests

def test_tokenizer_roundtrip_and_hf_directory(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = build_char_tokenizer()
    text = "3 7 12>22\n<think>12+7=19,19+3=22==22</think>\n<answer>(12+7)+3</answer>"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    for tag in TAGS:                                   # each tag is one token
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("a b", add_special_tokens=False)["input_ids"]) == 3    # chars, spaces kept
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3

    model, tok = load_policy(MODEL, None, seed=0, device=setup_runtime(RUNTIME))
    out = ckpt.save_final_model(tmp_path, model, tok)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= \
        {p.name for p in out.iterdir()}
    tok2 = AutoTokenizer.from_pretrained(str(out))
    model2 = AutoModelForCausalLM.from_pretrained(str(out))
    assert tok2(text)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, model2(x).logits, atol=1e-6)
    # same seed, same weights; another seed, other weights
    m_same, _ = load_policy(MODEL, None, seed=0, device=torch.device("cpu"))
    m_other, _ = load_policy(MODEL, None, seed=1, device=torch.device("cpu"))
    w = lambda m: m.model.embed_tokens.weight
    assert torch.equal(w(model), w(m_same)) and not torch.equal(w(model), w(m_other))


def test_sft_learns_and_writes_hf_model(sft_stage):
    rows = read_metrics(sft_stage)
    assert [r["step"] for r in rows] == list(range(1, 121))
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(rows[0])
    first = np.mean([r["loss"] for r in rows[:5]])
    last = np.mean([r["loss"] for r in rows[-5:]])
    assert last < 0.5 * first, (first, last)
    assert (sft_stage / "model" / "model.safetensors").exists()
    assert (sft_stage / "metrics.parquet").exists()
    assert len(ckpt.list_checkpoints(sft_stage)) == 1         # older ones pruned


def _prompts(tok, dataset, n=16):
    rows = D.read_rows(dataset / "test.parquet")[:n]
    ids = [D.encode_prompt(tok, D.render_prompt(tok, r["prompt"])) for r in rows]
    ids[0] = ids[0][:3]                                       # a short prompt: real left padding
    return ids


def test_sampler_greedy_equals_generate(sft_stage, dataset):
    model, tok = load_policy(MODEL, sft_stage, 0, torch.device("cpu"))
    prompts = _prompts(tok, dataset)
    out = generate(model, tok, prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=60, top_p=1.0, seed=None))
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    with torch.no_grad():
        ref = model.generate(**enc, max_new_tokens=60, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)[:, enc["input_ids"].shape[1]:]
    finished = 0
    for c, r in zip(out.completions, ref.tolist()):
        r = r[: r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r
        assert c[0].token_ids == r
        finished += c[0].finished
    assert finished >= 4          # sequences stopped at different steps (row dropping exercised)
    assert "<answer>" in out.completions[1][0].text


def test_sampled_logprobs_match_forward(sft_stage, dataset):
    model, tok = load_policy(MODEL, sft_stage, 0, torch.device("cpu"))
    prompts = _prompts(tok, dataset, 6)
    sp = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=50, seed=123)
    out = generate(model, tok, prompts, sp)
    assert [len(g) for g in out.completions] == [3] * 6
    for p, group in zip(prompts, out.completions):
        for c in group:
            lp = sequence_logprobs(model, p, c.token_ids, temperature=0.7)
            assert torch.allclose(lp, torch.tensor(c.logprobs), atol=1e-4)
    again = generate(model, tok, prompts, sp)                 # seeded: reproducible
    assert [c.token_ids for g in again.completions for c in g] == \
        [c.token_ids for g in out.completions for c in g]


@pytest.mark.parametrize("arch,kv_heads", [("qwen2", 2), ("qwen2", 4), ("llama", 2)])
def test_fast_decoder_matches_generate_on_other_layouts(arch, kv_heads):
    """Qwen2's q/k/v biases and grouped-query attention take the fused decoder's other branches."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from reasoning360.rollout.sampler import _FastDecoder

    cls, conf = {"qwen2": (Qwen2ForCausalLM, Qwen2Config), "llama": (LlamaForCausalLM, LlamaConfig)}[arch]
    torch.manual_seed(0)
    model = cls(conf(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=kv_heads, intermediate_size=128, max_position_embeddings=128,
                     eos_token_id=1, pad_token_id=0)).eval()
    assert _FastDecoder.supports(model)

    class Tok:
        pad_token_id, eos_token_id = 0, 1

        def batch_decode(self, toks, skip_special_tokens=True):
            return [str(t) for t in toks]

    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    out = generate(model, Tok(), prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=20, top_p=1.0, seed=None))
    for p, group in zip(prompts, out.completions):
        ref = model.generate(torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=1,
                             pad_token_id=0)[0, len(p):].tolist()
        assert group[0].token_ids == (ref[: ref.index(1) + 1] if 1 in ref else ref)


def test_sampling_follows_the_distribution():
    """The inverse-CDF draw: frequencies match softmax(logits / T), top-p cuts the tail, and a
    zero-probability token is never drawn."""
    from reasoning360.rollout.sampler import _pick

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]])).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    tok, lp = _pick(logits, 1.0, 1.0, gen)
    freq = torch.bincount(tok, minlength=4).float() / tok.numel()
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.015)
    assert torch.allclose(lp, torch.log(torch.tensor([0.5, 0.3, 0.2]))[tok])
    tok, _ = _pick(logits, 1.0, 0.7, gen)                      # keeps {0.5, 0.3}
    freq = torch.bincount(tok, minlength=4).float() / tok.numel()
    assert freq[2] == 0 and freq[3] == 0 and abs(freq[0] - 0.625) < 0.015


def _weights(stage: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(stage / "model" / "model.safetensors"))


def test_sft_resume_after_kill_and_preempt(dataset, tmp_path):
    spec = sft_spec(max_steps=12, save_every=4, batch_size=16)
    deps = {"traces": dataset, "data": dataset}
    straight = tmp_path / "straight"
    local.run_sft(make_ctx(straight, spec, deps))

    # 1) hard kill after step 7 was logged: the rerun restarts from checkpoint 4, drops rows 5-7
    killed = tmp_path / "killed"

    def kill_at_7(ctx, step):
        if step == 7:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        local.run_sft(make_ctx(killed, spec, deps, on_log=kill_at_7))
    assert [r["step"] for r in read_metrics(killed)] == list(range(1, 8))
    assert ckpt.latest_checkpoint(killed).name == "step_00000004"
    local.run_sft(make_ctx(killed, spec, deps))
    steps = [r["step"] for r in read_metrics(killed)]
    assert steps == list(range(1, 13))

    # 2) preemption requested during step 5: checkpoint at 5, Preempted, rerun continues at 6
    pre = tmp_path / "pre"

    def preempt_at_5(ctx, step):
        if step == 5:
            ctx.preempt.request()
    with pytest.raises(Preempted):
        local.run_sft(make_ctx(pre, spec, deps, on_log=preempt_at_5))
    assert ckpt.latest_checkpoint(pre).name == "step_00000005"
    assert not (pre / "model").exists()
    local.run_sft(make_ctx(pre, spec, deps))
    assert [r["step"] for r in read_metrics(pre)] == list(range(1, 13))

    # both interrupted runs end with the uninterrupted run's model
    ref = _weights(straight)
    for stage in (killed, pre):
        got = _weights(stage)
        assert all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)
    r_ref, r_pre = read_metrics(straight), read_metrics(pre)
    assert [r["loss"] for r in r_pre] == pytest.approx([r["loss"] for r in r_ref], abs=1e-5)


def test_grpo_runs_and_logs(sft_stage, dataset, tmp_path, stub_scorer):
    rl = rl_cfg(lr=1e-4, steps=3, batch_size=4, mini_batch_size=2, ppo_epochs=1,
                clip_ratio=0.2, kl_coef=0.01, kl_type="low_var_kl", entropy_coef=0.001,
                loss_agg_mode="token-mean", norm_adv_by_std=True, grad_clip=1.0, warmup_steps=0,
                save_every=2, val_every=3, val_size=8, recompute_old_logprobs=True,
                rollout={"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 48})
    spec = {"kind": "rl", "engine": "local", "task": "countdown", "data": "d", "init": "s",
            "model": dict(MODEL), "rl": rl, "rollout_backend": "builtin", "seed": 0, "init_step": None}
    sd = tmp_path / "rl"
    summary = local.run_grpo(make_ctx(sd, spec, {"data": dataset, "init": sft_stage}))
    rows = read_metrics(sd)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]          # step 0: validation of the init
    assert "val/accuracy" in rows[0]
    rows = rows[1:]
    keys = {"reward_mean", "reward_std", "accuracy", "format_rate", "response_length_mean",
            "backtracks_mean", "pg_loss", "pg_clipfrac", "ppo_kl", "kl", "entropy", "lr",
            "rollout_s", "train_s", "tokens_per_s", "grad_norm"}
    assert keys <= set(rows[0]), keys - set(rows[0])
    assert "val/accuracy" in rows[-1]
    assert all(0.0 <= r["reward_mean"] <= 1.0 for r in rows)
    assert rows[0]["format_rate"] > 0.5          # the SFT model writes <answer> tags
    assert 0.0 <= rows[0]["kl"] < 0.01          # starts at the reference (one small update in)
    assert (sd / "model" / "config.json").exists()
    assert "val_accuracy_end" in summary
    # weights moved away from the SFT init
    a, b = _weights(sft_stage), _weights(sd)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_grpo_skipping_zero_advantage_groups_is_exact(sft_stage, dataset, tmp_path, stub_scorer):
    """With no KL and no entropy term a group with one reward for all n samples has no gradient;
    skipping its forward/backward must leave the update unchanged. A KL coefficient of 1e-12
    turns skipping off (its gradient at the reference is 0 and its size negligible)."""
    rl = rl_cfg(lr=1e-3, steps=2, batch_size=8, mini_batch_size=4, ppo_epochs=1,
                clip_ratio=0.2, kl_coef=0.0, kl_type="low_var_kl", entropy_coef=0.0,
                loss_agg_mode="token-mean", norm_adv_by_std=True, grad_clip=1.0, warmup_steps=0,
                save_every=0, val_every=0, recompute_old_logprobs=False,
                rollout={"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 48})
    out = {}
    for name, kl in (("skip", 0.0), ("full", 1e-12)):
        spec = {"kind": "rl", "engine": "local", "task": "countdown", "data": "d", "init": "s",
                "model": dict(MODEL), "rl": {**rl, "kl_coef": kl}, "rollout_backend": "builtin", "seed": 0, "init_step": None}
        local.run_grpo(make_ctx(tmp_path / name, spec, {"data": dataset, "init": sft_stage}))
        out[name] = read_metrics(tmp_path / name)
    skipped = [r["zero_adv_skipped_frac"] for r in out["skip"]]
    assert any(f > 0 for f in skipped) and all(r["zero_adv_skipped_frac"] == 0 for r in out["full"])
    a, b = _weights(tmp_path / "skip"), _weights(tmp_path / "full")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [r["grad_norm"] for r in out["skip"]] == pytest.approx([r["grad_norm"] for r in out["full"]], rel=1e-4)


def test_grpo_cold_start_and_eval(dataset, tmp_path, stub_scorer):
    rl = rl_cfg(steps=1, batch_size=2, mini_batch_size=2, save_every=0,
                rollout={"n": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8})
    spec = {"kind": "rl", "engine": "local", "task": "countdown", "data": "d", "init": None,
            "model": dict(MODEL), "rl": rl, "rollout_backend": "builtin", "seed": 0, "init_step": None}
    sd = tmp_path / "cold"
    local.run_grpo(make_ctx(sd, spec, {"data": dataset}))
    assert read_metrics(sd)[0]["response_length_mean"] <= 8

    ev = {"kind": "eval", "engine": "local", "task": "countdown", "data": "d", "checkpoint": "c",
          "steps": [None], "final_step": 1, "model": dict(MODEL), "rollout_backend": "builtin",
          "eval": eval_cfg(split="test", max_new_tokens=16, batch_size=10)}
    ed = tmp_path / "eval"
    summary = local.run_eval(make_ctx(ed, ev, {"data": dataset, "init": sd}))
    items = pd.read_parquet(ed / "items.parquet")
    protocols = CONFIG["eval"]["protocols"]
    assert summary["n"] == 24 and len(items) == 24 * sum(p["n"] for p in protocols.values())
    assert set(items["protocol"]) == set(protocols) and set(items["step"]) == {1}
    assert {"index", "question", "prompt", "response", "score", "correct", "format_ok",
            "response_tokens", "backtracks", "difficulty"} <= set(items.columns)
    primary = items[items["protocol"] == CONFIG["eval"]["primary"]]
    assert summary["accuracy"] == pytest.approx(primary["correct"].mean())
    assert (items["response_tokens"] <= 16).all()
    assert set(summary) >= {"accuracy", "format_rate", "mean_response_tokens", "mean_backtracks", "n"}


def test_eval_of_trained_model_scores(sft_stage, dataset, tmp_path, stub_scorer):
    ev = {"kind": "eval", "engine": "local", "task": "countdown", "data": "d", "checkpoint": "c",
          "steps": [None], "final_step": 120, "model": dict(MODEL), "rollout_backend": "builtin",
          "eval": eval_cfg(split="test", max_new_tokens=64, batch_size=256,
                           protocols={"greedy": {"temperature": 0.0, "top_p": 1.0, "n": 1}}, primary="greedy")}
    summary = local.run_eval(make_ctx(tmp_path / "e", ev, {"data": dataset, "init": sft_stage}))
    assert summary["format_rate"] > 0.5
    items = pd.read_parquet(tmp_path / "e" / "items.parquet")
    assert (items["format_ok"] == (items["score"] > 0)).all()


def test_fixture_matches_real_countdown_scorer(dataset):
    tasks = pytest.importorskip("reasoning360.tasks")
    row = D.read_rows(dataset / "sft.parquet")[0]
    gt = D.ground_truth(row)
    assert tasks.score("countdown", row["response"], gt) == 1.0
    assert tasks.score("countdown", "no tags at all", gt) == 0.0
    assert _stub_score("countdown", row["response"], gt) == 1.0


def test_grpo_preempt_resume_matches_uninterrupted(sft_stage, dataset, tmp_path, stub_scorer):
    rl = rl_cfg(lr=1e-3, steps=4, batch_size=2, mini_batch_size=1, save_every=0,
                kl_coef=0.02, rollout={"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 40})
    spec = {"kind": "rl", "engine": "local", "task": "countdown", "data": "d", "init": "s",
            "model": dict(MODEL), "rl": rl, "rollout_backend": "builtin", "seed": 3, "init_step": None}
    deps = {"data": dataset, "init": sft_stage}
    local.run_grpo(make_ctx(tmp_path / "a", spec, deps))

    def preempt_at_2(ctx, step):
        if step == 2:
            ctx.preempt.request()
    with pytest.raises(Preempted):
        local.run_grpo(make_ctx(tmp_path / "b", spec, deps, on_log=preempt_at_2))
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step_00000002"
    local.run_grpo(make_ctx(tmp_path / "b", spec, deps))
    ra, rb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    assert [r["reward_mean"] for r in rb] == [r["reward_mean"] for r in ra]   # same samples
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_kept_models_init_step_and_eval_steps(sft_stage, dataset, tmp_path, stub_scorer):
    """sft.export_steps keeps a model RL starts from (rl.init_step); rl.eval_steps keeps models the
    after-RL eval evaluates beside the final one; pass@k from n samples."""
    from reasoning360.engines.context import model_dir

    sft_dir = tmp_path / "sft"
    local.run_sft(make_ctx(sft_dir, sft_spec(max_steps=8, save_every=0, export_steps=[4]),
                           {"traces": dataset, "data": dataset, "init": sft_stage}))
    assert (model_dir(sft_dir, 4) / "config.json").exists() and not (sft_dir / "models" / "step_00000008").exists()
    rl = rl_cfg(steps=2, batch_size=2, mini_batch_size=2, save_every=0, eval_steps=[1],
                rollout={"n": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16})
    spec = {"kind": "rl", "engine": "local", "task": "countdown", "data": "d", "init": "s",
            "model": dict(MODEL), "rl": rl, "rollout_backend": "builtin", "seed": 0, "init_step": 4}
    rl_dir = tmp_path / "rl"
    local.run_grpo(make_ctx(rl_dir, spec, {"data": dataset, "init": sft_dir}))
    assert (model_dir(rl_dir, 1) / "config.json").exists() and (rl_dir / "model" / "config.json").exists()
    # RL started from the step-4 model, not the final SFT model: its first step's old log-probs
    # (the rollout's) are the step-4 model's
    first = read_metrics(rl_dir)[0]
    assert first["step"] == 1
    ev = {"kind": "eval", "engine": "local", "task": "countdown", "data": "d", "checkpoint": "r",
          "steps": [1, None], "final_step": 2, "model": dict(MODEL), "rollout_backend": "builtin",
          "eval": eval_cfg(max_new_tokens=16, batch_size=24, primary="pass",
                           protocols={"pass": {"temperature": 1.0, "top_p": 1.0, "n": 4}})}
    summary = local.run_eval(make_ctx(tmp_path / "ev", ev, {"data": dataset, "init": rl_dir}))
    items = pd.read_parquet(tmp_path / "ev" / "items.parquet")
    assert set(items["step"]) == {1, 2} and set(items["sample"]) == {0, 1, 2, 3}
    assert set(summary["by_step"]) == {"1", "2"}
    last = summary["by_step"]["2"]["pass"]
    assert last["pass@1"] == pytest.approx(last["accuracy"])
    assert last["pass@1"] <= last["pass@2"] <= last["pass@4"]
    mine = items[items["step"] == 2].groupby("index")["correct"].any().mean()
    assert last["pass@4"] == pytest.approx(mine)          # pass@n: any of the n samples


def test_init_step_loads_the_kept_model(sft_stage, dataset, tmp_path):
    from reasoning360.engines.local.model import load_policy

    sft_dir = tmp_path / "sft"
    local.run_sft(make_ctx(sft_dir, sft_spec(max_steps=6, save_every=0, export_steps=[3]),
                           {"traces": dataset, "data": dataset}))
    kept, _ = load_policy(MODEL, sft_dir, 0, torch.device("cpu"), step=3)
    final, _ = load_policy(MODEL, sft_dir, 0, torch.device("cpu"))
    a, b = kept.state_dict(), final.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="step"):
        load_policy(MODEL, sft_dir, 0, torch.device("cpu"), step=5)
