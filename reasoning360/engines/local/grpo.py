"""GRPO with verl's semantics on the local engine.

Per step: `batch_size` prompts (a seeded order over train.parquet), `n` samples each through
the RolloutEngine (old log-probs come back with the tokens), exact 0/0.1/1 rewards from
reasoning360.tasks, group-normalised advantages, then `ppo_epochs` passes of mini-batches of
`mini_batch_size` prompts with verl's clipped loss (+ KL to the frozen initial policy, - entropy
bonus). Keys mean what they mean in verl (data.train_batch_size, actor.ppo_mini_batch_size,
clip_ratio, kl_loss_coef/kl_loss_type, entropy_coeff, loss_agg_mode, norm_adv_by_std_in_grpo).

Everything random is a function of (seed, step), so a resumed run repeats the steps an
uninterrupted run would have taken.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ...progress import progress_bar
from ..context import Preempted, StageContext
from . import checkpoint as ckpt
from . import data as D
from .evaluate import evaluate_rows
from .losses import actor_loss, compute_grpo_outcome_advantage, entropy_from_logits
from .model import load_policy, load_reference, num_params, setup_runtime
from ...rollout import SamplingParams, make_rollout_engine
from .sft import make_optimizer, show_progress

DEFAULTS = {"lr": 1e-4, "steps": 60, "batch_size": 32, "mini_batch_size": 32, "ppo_epochs": 1,
            "clip_ratio": 0.2, "clip_ratio_low": None, "clip_ratio_high": None, "clip_ratio_c": 3.0,
            "kl_coef": 0.0, "kl_type": "low_var_kl", "entropy_coef": 0.0, "loss_agg_mode": "token-mean",
            "norm_adv_by_std": True, "grad_clip": 1.0, "warmup_steps": 0, "save_every": 20,
            "weight_decay": 0.0, "micro_batch_size": None, "val_every": 0, "val_size": 0,
            "keep_checkpoints": 1, "betas": [0.9, 0.999], "recompute_old_logprobs": "auto",
            "rollout": {"n": 8, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 192}}


def _constant_with_warmup(optimizer, warmup: int):
    from transformers import get_constant_schedule_with_warmup

    return get_constant_schedule_with_warmup(optimizer, int(warmup or 0))


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, salt]).generate_state(1)[0])


def build_batch(prompt_ids: list[list[int]], comps: list, pad_id: int, device):
    """Right-padded prompt+response ids and the response-aligned tensors for the loss:
    `gather` (position whose logits predict response token j), `resp` (token ids),
    `mask`, `old_logp`."""
    N = len(comps)
    R = max(max(len(c.token_ids) for c in comps), 1)
    L = max(len(p) + len(c.token_ids) for p, c in zip(prompt_ids, comps))
    ids = torch.full((N, L), pad_id, dtype=torch.long)
    attn = torch.zeros((N, L), dtype=torch.long)
    gather = torch.zeros((N, R), dtype=torch.long)
    resp = torch.full((N, R), pad_id, dtype=torch.long)
    mask = torch.zeros((N, R), dtype=torch.float32)
    old = torch.zeros((N, R), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompt_ids, comps)):
        n_p, n_r = len(p), len(c.token_ids)
        ids[i, :n_p] = torch.tensor(p)
        ids[i, n_p:n_p + n_r] = torch.tensor(c.token_ids)
        attn[i, :n_p + n_r] = 1
        gather[i] = torch.clamp(torch.arange(R) + n_p - 1, max=L - 1)
        resp[i, :n_r] = torch.tensor(c.token_ids)
        mask[i, :n_r] = 1.0
        old[i, :n_r] = torch.tensor(c.logprobs)
    to = lambda t: t.to(device)
    return {"ids": to(ids), "attn": to(attn), "gather": to(gather), "resp": to(resp),
            "mask": to(mask), "old_logp": to(old)}


def logprob_gap(rollout_logp: torch.Tensor, train_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The rollout/training mismatch: the rollout engine's per-token log-probs vs the trainer's
    recomputed ones over response tokens (verl logs the prob. gap as training/rollout_probs_diff_*)."""
    m = mask > 0
    if not bool(m.any()):
        return {}
    a, b = rollout_logp[m].float(), train_logp[m].float()
    d = (a - b).abs()
    p = (a.exp() - b.exp()).abs()
    return {"rollout_logprob_gap_mean": float(d.mean()), "rollout_logprob_gap_max": float(d.max()),
            "rollout_probs_diff_mean": float(p.mean()), "rollout_probs_diff_max": float(p.max())}


def gather_response(logits: torch.Tensor, gather: torch.Tensor, resp: torch.Tensor, temperature: float,
                    want_entropy: bool | str):
    """From full-sequence logits (n, L, V): log-probs of the response tokens (n, R), with
    logits / temperature as verl's actor computes them, and their entropy (or None)."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    g = gather.clamp(max=logits.shape[1] - 1)
    logits = logits.gather(1, g[..., None].expand(-1, -1, logits.shape[-1]))    # (n, R, V)
    logp = torch.log_softmax(logits, -1).gather(-1, resp[..., None]).squeeze(-1)
    if not want_entropy:
        return logp, None
    if want_entropy == "grad":
        return logp, entropy_from_logits(logits)
    with torch.no_grad():
        return logp, entropy_from_logits(logits)


def response_logprobs(model, b: dict, sel, temperature: float, want_entropy: bool | str):
    """Response log-probs (and entropy) of rows `sel` of a batch from `build_batch`.
    want_entropy: False, True (no gradient through it) or "grad" (for an entropy bonus)."""
    ids, attn = b["ids"][sel], b["attn"][sel]
    L = int(attn.sum(1).max())
    # Right padding + causal attention: pads after a sequence never affect its positions, so
    # no mask (SDPA's causal fast path).
    logits = model(input_ids=ids[:, :L]).logits
    return gather_response(logits, b["gather"][sel], b["resp"][sel], temperature, want_entropy)


@torch.no_grad()
def no_grad_logprobs(model, b: dict, micro: int, temperature: float) -> torch.Tensor:
    """Response log-probs of every row, in length-sorted micro-batches."""
    order = torch.argsort(b["attn"].sum(1), stable=True)
    out = torch.zeros_like(b["old_logp"])
    for s in range(0, len(order), micro):
        sel = order[s:s + micro]
        out[sel] = response_logprobs(model, b, sel, temperature, False)[0]
    return out


def run_grpo(ctx: StageContext) -> dict[str, Any]:
    spec = ctx.spec
    cfg = {**DEFAULTS, **(spec.get("rl") or {})}
    rcfg = {**DEFAULTS["rollout"], **(cfg.get("rollout") or {})}
    seed = int(spec.get("seed", 0))
    device = setup_runtime(ctx.runtime)
    torch.manual_seed(seed)
    model, tok = load_policy(spec["model"], ctx.deps.get("init"), seed, device)
    kl_coef, ent_coef = float(cfg["kl_coef"] or 0.0), float(cfg["entropy_coef"] or 0.0)
    ref = load_reference(model, device) if kl_coef > 0 else None      # the initial policy

    train = D.read_rows(D.split_path(ctx.deps["data"], "train"))
    prompts = [D.encode_prompt(tok, D.render_prompt(tok, r["prompt"])) for r in train]
    val_every = int(cfg.get("val_every") or 0)
    val_rows = []
    if val_every:
        val_rows = D.read_rows(D.split_path(ctx.deps["data"], "val"))
        if int(cfg.get("val_size") or 0) > 0:
            val_rows = val_rows[: int(cfg["val_size"])]

    bs, mini = int(cfg["batch_size"]), int(cfg["mini_batch_size"] or cfg["batch_size"])
    if bs % mini:
        raise ValueError(f"rl.batch_size={bs} must be a multiple of rl.mini_batch_size={mini}")
    n, steps, temp = int(rcfg["n"]), int(cfg["steps"]), float(rcfg["temperature"])
    # Sequences per forward pass. Rows are sorted by length before splitting, so a micro-batch
    # pads little; the loss is normalised over the whole mini-batch, so the gradient does not
    # depend on this (only speed and memory do).
    micro = int(cfg.get("micro_batch_size") or 0) * n or 64
    # A sequence whose group got one reward for all n samples has advantage 0: with no KL and no
    # entropy term its loss and gradient are exactly 0, and the loss is normalised over the whole
    # mini-batch, so skipping its forward/backward changes nothing but the time (cold start on a
    # from-scratch model skips them all; the loss metrics then cover the sequences trained on).
    skip_zero_adv = not kl_coef and not ent_coef
    order = D.PromptOrder(len(train), bs, seed)
    opt = make_optimizer(model, cfg)
    sched = _constant_with_warmup(opt, int(cfg.get("warmup_steps") or 0))
    rt = ctx.runtime or {}
    rollout = make_rollout_engine({"backend": spec.get("rollout_backend") or "builtin",
                                   "workers": rt.get("rollout_workers", 0), "vllm": rt.get("rollout_vllm"),
                                   "threads_per_worker": rt.get("rollout_threads_per_worker", 1)},
                                  model, tok)
    score, count_backtracks = D.task_fns()
    # Rollout log-probs equal an actor forward pass in fp32 (to ~1e-6), so the extra forward is
    # skipped there; in bf16/fp16 they differ by rounding and verl's recompute is used.
    recompute_old = cfg.get("recompute_old_logprobs", "auto")
    if recompute_old == "auto":     # (and always for engines that say so: vLLM)
        recompute_old = (next(model.parameters()).dtype != torch.float32
                         or bool(getattr(rollout, "recompute_old_logprobs", False)))

    step = 0
    last = ckpt.latest_checkpoint(ctx.stage_dir)
    if last is not None:
        step = int(ckpt.load_checkpoint(last, model, opt, sched)["step"])
        rollout.update_weights(model.state_dict())
    tracker = ctx.make_tracker(step)
    save_every, keep = int(cfg["save_every"] or 0), int(cfg["keep_checkpoints"] or 1)

    def save(at: int) -> None:
        ckpt.save_checkpoint(ctx.stage_dir, at, model, tok, opt, sched,
                             extra={"data_position": at * bs}, keep=keep)

    def validate(at: int) -> dict[str, float]:
        _, s = evaluate_rows(model, tok, val_rows, {"temperature": 0.0, "batch_size": 256,
                                                    "max_new_tokens": rcfg["max_new_tokens"]},
                             engine=rollout if spec.get("rollout_backend") == "vllm" else None)
        return {f"val/{k}": v for k, v in s.items() if k != "n"}

    first_val = validate(step) if val_every and step == 0 else {}
    if first_val:
        tracker.log(0, **first_val)          # curves start at the initial policy
    history: list[dict] = []
    t_start = time.perf_counter()
    with progress_bar("grpo", total=steps, start=step, enabled=show_progress(ctx)) as bar:
        while step < steps:
            t0 = time.perf_counter()
            idx = order.batch(step)
            sp = SamplingParams(n=n, temperature=temp, top_p=float(rcfg["top_p"]),
                                max_new_tokens=int(rcfg["max_new_tokens"]), seed=_step_seed(seed, step))
            out = rollout.generate([prompts[i] for i in idx], sp)
            t_roll = time.perf_counter() - t0

            comps = [c for group in out.completions for c in group]
            rows = [train[i] for i in idx for _ in range(n)]
            rewards = torch.tensor([float(score(r["data_source"], c.text, D.ground_truth(r)))
                                    for r, c in zip(rows, comps)])
            backtracks = [count_backtracks(r["data_source"], c.text) for r, c in zip(rows, comps)]
            t1 = time.perf_counter()
            t_reward = t1 - t0 - t_roll
            seq_prompts = [prompts[i] for i in idx for _ in range(n)]
            b = build_batch(seq_prompts, comps, tok.pad_token_id, device)
            lengths = b["mask"].sum(1).long()
            tlr = torch.zeros_like(b["mask"])
            tlr[torch.arange(len(comps)), (lengths - 1).clamp(min=0)] = rewards.to(tlr)
            group = np.repeat(np.arange(len(idx)), n)
            adv, _ = compute_grpo_outcome_advantage(tlr, b["mask"], group,
                                                    norm_adv_by_std_in_grpo=bool(cfg["norm_adv_by_std"]))
            gap = {}
            if recompute_old:          # verl's default: old log-probs from an actor forward pass
                rollout_logp = b["old_logp"]
                b["old_logp"] = no_grad_logprobs(model, b, micro, temp) * b["mask"]
                gap = logprob_gap(rollout_logp, b["old_logp"], b["mask"])   # rollout/training mismatch
            if ref is not None:
                b["ref_logp"] = no_grad_logprobs(ref, b, micro, temp)

            model.train()
            skipped = 0
            acc: dict[str, list[float]] = {}
            gnorms = []
            lr = sched.get_last_lr()[0]
            for epoch in range(int(cfg["ppo_epochs"])):
                perm = np.random.default_rng(_step_seed(seed, step, 1 + epoch)).permutation(len(idx))
                for m0 in range(0, len(idx), mini):
                    prompts_mb = perm[m0:m0 + mini]
                    rows_mb = torch.as_tensor(np.concatenate([np.arange(p * n, p * n + n) for p in prompts_mb]),
                                              device=device)
                    n_tok = b["mask"][rows_mb].sum()
                    n_seq = (b["mask"][rows_mb].sum(1) > 0).sum()
                    rows_mb = rows_mb[torch.argsort(b["attn"][rows_mb].sum(1), stable=True)]
                    if skip_zero_adv:      # no gradient from them: skip their forward/backward
                        rows_mb = rows_mb[(adv[rows_mb] != 0).any(1)]
                        skipped += int(n_seq) - len(rows_mb)
                    for s in range(0, len(rows_mb), micro):
                        sel = rows_mb[s:s + micro]
                        logp, ent = response_logprobs(model, b, sel, temp, "grad" if ent_coef else True)
                        loss, met = actor_loss(
                            logp, b["old_logp"][sel], adv[sel], b["mask"][sel],
                            clip_ratio=float(cfg["clip_ratio"]), clip_ratio_low=cfg.get("clip_ratio_low"),
                            clip_ratio_high=cfg.get("clip_ratio_high"),
                            clip_ratio_c=float(cfg.get("clip_ratio_c") or 3.0),
                            loss_agg_mode=cfg["loss_agg_mode"], entropy=ent, entropy_coeff=ent_coef,
                            ref_log_prob=b["ref_logp"][sel] if ref is not None else None,
                            kl_coef=kl_coef, kl_type=cfg["kl_type"],
                            batch_num_tokens=n_tok, global_batch_size=n_seq)
                        loss.backward()
                        for k, v in met.items():
                            acc.setdefault(k, []).append(float(v))
                    if not len(rows_mb):      # all skipped: a zero gradient, so Adam's step
                        for p in model.parameters():  # still applies its momentum, as in verl
                            p.grad = torch.zeros_like(p)
                    gnorms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                                       float(cfg["grad_clip"] or 1e9))))
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            sched.step()
            rollout.update_weights(model.state_dict())
            t_train = time.perf_counter() - t1
            step += 1

            resp_tokens = int(lengths.sum())
            train_tokens = int(b["attn"].sum()) * int(cfg["ppo_epochs"])
            row = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
                   "accuracy": float((rewards == 1.0).float().mean()),
                   "format_rate": float((rewards > 0).float().mean()),
                   "response_length_mean": float(lengths.float().mean()),
                   "truncated_rate": float(np.mean([not c.finished for c in comps])),
                   "backtracks_mean": float(np.mean(backtracks)),
                   **{k: float(np.mean(v)) for k, v in acc.items()},
                   "grad_norm": float(np.mean(gnorms)), "lr": lr,
                   "zero_adv_skipped_frac": skipped / max(len(comps) * int(cfg["ppo_epochs"]), 1),
                   "rollout_s": t_roll, "reward_s": t_reward, "train_s": t_train, "step_s": time.perf_counter() - t0,
                   "rollout_tokens_per_s": resp_tokens / max(t_roll, 1e-9),
                   "train_tokens_per_s": train_tokens / max(t_train, 1e-9),
                   "tokens_per_s": resp_tokens / max(time.perf_counter() - t0, 1e-9), **gap}
            if val_every and (step % val_every == 0 or step == steps):
                row.update(validate(step))
            tracker.log(step, **row)
            history.append(row)
            bar.advance(1, reward=row["reward_mean"], acc=row["accuracy"])
            saved = False
            if save_every and step % save_every == 0 and step < steps:
                save(step)
                saved = True
            if ctx.preempt.requested:
                if not saved:
                    save(step)
                tracker.close(finished=False)
                rollout.close()
                raise Preempted(f"grpo preempted at step {step}")

    ckpt.save_final_model(ctx.stage_dir, model, tok)
    tracker.close(finished=True)
    rollout.close()
    tail = history[-5:]
    summary = {"steps": steps, "params": num_params(model), "wall_s": time.perf_counter() - t_start,
               "device": str(device),
               "reward_mean_last5": float(np.mean([h["reward_mean"] for h in tail])) if tail else None,
               "accuracy_last5": float(np.mean([h["accuracy"] for h in tail])) if tail else None}
    if first_val:
        summary["val_accuracy_start"] = first_val.get("val/accuracy")
    if history and "val/accuracy" in history[-1]:
        summary["val_accuracy_end"] = history[-1]["val/accuracy"]
    return summary
