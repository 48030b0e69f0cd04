"""GRPO with verl's semantics on the local engine.

`GRPOTrainer.fit()` reads as the algorithm, one named phase per step (as verl's RayPPOTrainer):

    generate     `batch_size` prompts (a seeded order over train.parquet), `n` samples each
                 through the rollout engine (reasoning360.rollout; old log-probs come back with
                 the tokens)
    score        exact 0 / 0.1 / 1 rewards from reasoning360.tasks, backtracks counted
    advantages   group-normalised outcome advantages (verl's compute_grpo_outcome_advantage)
    logprobs     old log-probs recomputed by the trainer where the rollout's differ (bf16,
                 vLLM), and the frozen reference's when there is a KL term
    update       `ppo_epochs` passes of mini-batches of `mini_batch_size` prompts with verl's
                 clipped loss (+ KL to the reference, - entropy bonus), one optimiser step each
    sync         the new weights to the rollout engine
    metrics      one metrics.jsonl row (and validation every `val_every` steps)

Keys mean what they mean in verl (data.train_batch_size, actor.ppo_mini_batch_size, clip_ratio,
kl_loss_coef/kl_loss_type, entropy_coeff, loss_agg_mode, norm_adv_by_std_in_grpo). Everything
random is a function of (seed, step), so a resumed run repeats the steps an uninterrupted run
would have taken. The rollout engine is released in a `finally`, whatever happens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...progress import progress_bar
from ...rollout import SamplingParams, make_rollout_engine
from ..context import Preempted, StageContext
from . import checkpoint as ckpt
from . import data as D
from .evaluate import evaluate_rows
from .losses import actor_loss, compute_grpo_outcome_advantage, entropy_from_logits
from .model import load_policy, load_reference, num_params, setup_runtime
from .sft import clip_norm, make_optimizer, show_progress


# The older verl of the paper's code (dp_actor.py:207-208,271-272): a token mean within each
# micro-batch, divided by the fixed number of micro-batches per mini-batch. verl 0.9.1 (and
# `token-mean`) averages over the mini-batch's tokens instead.
MICRO_TOKEN_MEAN = "micro-token-mean"


def _constant_with_warmup(optimizer, warmup: int):
    from transformers import get_constant_schedule_with_warmup

    return get_constant_schedule_with_warmup(optimizer, int(warmup))


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


@dataclass
class Rollouts:
    """One step's samples and everything computed from them."""
    idx: list[int]                               # prompt indices into train.parquet
    comps: list                                  # flat: prompt-major, n samples each
    batch: dict[str, torch.Tensor] = field(default_factory=dict)
    rewards: torch.Tensor | None = None
    backtracks: list[int] = field(default_factory=list)
    adv: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    gap: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)


class GRPOTrainer:
    def __init__(self, ctx: StageContext):
        spec = ctx.spec
        self.ctx, self.cfg, self.rcfg = ctx, spec["rl"], spec["rl"]["rollout"]
        self.seed = int(spec["seed"])
        self.device = setup_runtime(ctx.runtime)
        torch.manual_seed(self.seed)
        # the SFT model (its snapshot at `init_step` when the spec names one), or the base model
        self.model, self.tok = load_policy(spec["model"], ctx.deps.get("init"), self.seed, self.device,
                                           step=spec["init_step"])
        self.kl_coef, self.ent_coef = float(self.cfg["kl_coef"]), float(self.cfg["entropy_coef"])
        self.ref = load_reference(self.model, self.device) if self.kl_coef > 0 else None   # the initial policy

        self.train = D.read_rows(D.split_path(ctx.deps["data"], "train"))
        limit = self.cfg["max_prompt_len"]           # longer prompts keep their end (verl: truncation=left)
        self.prompts = [ids if limit is None else ids[-int(limit):] for ids in
                        (D.encode_prompt(self.tok, D.render_prompt(self.tok, r["prompt"])) for r in self.train)]
        self.val_every = int(self.cfg["val_every"])
        self.val_rows = []
        if self.val_every:
            self.val_rows = D.read_rows(D.split_path(ctx.deps["data"], "val"))
            if int(self.cfg["val_size"]) > 0:
                self.val_rows = self.val_rows[: int(self.cfg["val_size"])]

        self.bs, self.mini = int(self.cfg["batch_size"]), int(self.cfg["mini_batch_size"])
        self.n, self.steps = int(self.rcfg["n"]), int(self.cfg["steps"])
        self.temp = float(self.rcfg["temperature"])
        # Sequences per forward pass. Rows are sorted by length before splitting, so a micro-batch
        # pads little; the loss is normalised over the whole mini-batch, so the gradient does not
        # depend on this (only speed and memory do).
        self.micro = int(self.cfg["micro_batch_size"])
        # A sequence whose group got one reward for all n samples has advantage 0: with no KL and
        # no entropy term its loss and gradient are exactly 0, and the loss is normalised over
        # the whole mini-batch, so skipping its forward/backward changes nothing but the time.
        self.skip_zero_adv = not self.kl_coef and not self.ent_coef and self.cfg["loss_agg_mode"] != MICRO_TOKEN_MEAN
        self.order = D.PromptOrder(len(self.train), self.bs, self.seed)
        self.opt = make_optimizer(self.model, self.cfg)
        self.sched = _constant_with_warmup(self.opt, int(self.cfg["warmup_steps"]))
        rt = ctx.runtime
        self.backend = spec["rollout_backend"]
        self.rollout = make_rollout_engine(
            {"backend": self.backend, "workers": rt["rollout_workers"], "vllm": rt.get("rollout_vllm"),
             "threads_per_worker": rt["rollout_threads_per_worker"]}, self.model, self.tok)
        self.score_fn, self.count_backtracks = D.task_fns()
        # Rollout log-probs equal an actor forward pass in fp32 (to ~1e-6), so the extra forward
        # is skipped there; in bf16/fp16 they differ by rounding and verl's recompute is used
        # (always for engines that say so: vLLM).
        self.recompute_old = self.cfg["recompute_old_logprobs"]
        if self.recompute_old == "auto":
            self.recompute_old = (next(self.model.parameters()).dtype != torch.float32
                                  or bool(self.rollout.recompute_old_logprobs))
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.first_val: dict[str, float] = {}

    # ------------------------------------------------------------------ the algorithm
    def fit(self) -> dict[str, Any]:
        try:
            self.resume()
            self.tracker = self.ctx.make_tracker(self.step)
            if self.val_every and self.cfg["val_before_train"] and self.step == 0:
                self.first_val = self.validate()
                self.tracker.log(0, **self.first_val)      # curves start at the initial policy
            t_start = time.perf_counter()
            with progress_bar("grpo", total=self.steps, start=self.step, enabled=show_progress(self.ctx)) as bar:
                while self.step < self.steps:
                    t0 = time.perf_counter()
                    r = self.generate()
                    self.score(r)
                    self.advantages(r)
                    self.logprobs(r)
                    stats = self.update(r)
                    self.sync_weights()
                    self.step += 1
                    row = self.metrics(r, stats, t0)
                    bar.advance(1, reward=row["reward_mean"], acc=row["accuracy"])
                    self.checkpoint_or_stop()
            ckpt.save_final_model(self.ctx.stage_dir, self.model, self.tok)
            self.tracker.close(finished=True)
            return self.summary(time.perf_counter() - t_start)
        finally:
            self.rollout.close()

    # ------------------------------------------------------------------ phases
    def resume(self) -> None:
        last = ckpt.latest_checkpoint(self.ctx.stage_dir)
        if last is not None:
            self.step = int(ckpt.load_checkpoint(last, self.model, self.opt, self.sched)["step"])
            self.rollout.update_weights(self.model.state_dict())

    def generate(self) -> Rollouts:
        t0 = time.perf_counter()
        idx = self.order.batch(self.step)
        sp = SamplingParams(n=self.n, temperature=self.temp, top_p=float(self.rcfg["top_p"]),
                            max_new_tokens=int(self.rcfg["max_new_tokens"]), seed=_step_seed(self.seed, self.step))
        out = self.rollout.generate([self.prompts[i] for i in idx], sp)
        r = Rollouts(idx, [c for group in out.completions for c in group])
        r.times["rollout_s"] = time.perf_counter() - t0
        return r

    def score(self, r: Rollouts) -> None:
        t0 = time.perf_counter()
        rows = [self.train[i] for i in r.idx for _ in range(self.n)]
        r.rewards = torch.tensor([float(self.score_fn(row["data_source"], c.text, D.ground_truth(row)))
                                  for row, c in zip(rows, r.comps)])
        r.backtracks = [self.count_backtracks(row["data_source"], c.text) for row, c in zip(rows, r.comps)]
        r.times["reward_s"] = time.perf_counter() - t0

    def advantages(self, r: Rollouts) -> None:
        t0 = time.perf_counter()
        seq_prompts = [self.prompts[i] for i in r.idx for _ in range(self.n)]
        r.batch = build_batch(seq_prompts, r.comps, self.tok.pad_token_id, self.device)
        r.lengths = r.batch["mask"].sum(1).long()
        tlr = torch.zeros_like(r.batch["mask"])
        tlr[torch.arange(len(r.comps)), (r.lengths - 1).clamp(min=0)] = r.rewards.to(tlr)
        group = np.repeat(np.arange(len(r.idx)), self.n)
        r.adv, _ = compute_grpo_outcome_advantage(tlr, r.batch["mask"], group,
                                                  norm_adv_by_std_in_grpo=bool(self.cfg["norm_adv_by_std"]))
        r.times["train_start"] = t0

    def logprobs(self, r: Rollouts) -> None:
        b = r.batch
        if self.recompute_old:          # verl's default: old log-probs from an actor forward pass
            rollout_logp = b["old_logp"]
            b["old_logp"] = no_grad_logprobs(self.model, b, self.micro, self.temp) * b["mask"]
            r.gap = logprob_gap(rollout_logp, b["old_logp"], b["mask"])    # rollout/training mismatch
        if self.ref is not None:
            b["ref_logp"] = no_grad_logprobs(self.ref, b, self.micro, self.temp)

    def update(self, r: Rollouts) -> dict[str, Any]:
        """`ppo_epochs` passes over mini-batches of whole groups, one optimiser step each."""
        b, adv, n, cfg = r.batch, r.adv, self.n, self.cfg
        micro_mean = cfg["loss_agg_mode"] == MICRO_TOKEN_MEAN
        n_accum = -(-self.mini * n // self.micro)          # micro-batches per mini-batch (their fixed divisor)
        self.model.train()
        skipped = 0
        acc: dict[str, list[float]] = {}
        gnorms = []
        lr = self.sched.get_last_lr()[0]
        for epoch in range(int(cfg["ppo_epochs"])):
            perm = np.random.default_rng(_step_seed(self.seed, self.step, 1 + epoch)).permutation(len(r.idx))
            for m0 in range(0, len(r.idx), self.mini):
                prompts_mb = perm[m0:m0 + self.mini]
                rows_mb = torch.as_tensor(np.concatenate([np.arange(p * n, p * n + n) for p in prompts_mb]),
                                          device=self.device)
                n_tok = b["mask"][rows_mb].sum()
                n_seq = (b["mask"][rows_mb].sum(1) > 0).sum()
                rows_mb = rows_mb[torch.argsort(b["attn"][rows_mb].sum(1), stable=True)]
                if self.skip_zero_adv:      # no gradient from them: skip their forward/backward
                    rows_mb = rows_mb[(adv[rows_mb] != 0).any(1)]
                    skipped += int(n_seq) - len(rows_mb)
                for s in range(0, len(rows_mb), self.micro):
                    sel = rows_mb[s:s + self.micro]
                    logp, ent = response_logprobs(self.model, b, sel, self.temp, "grad" if self.ent_coef else True)
                    loss, met = actor_loss(
                        logp, b["old_logp"][sel], adv[sel], b["mask"][sel],
                        clip_ratio=float(cfg["clip_ratio"]), clip_ratio_low=cfg["clip_ratio_low"],
                        clip_ratio_high=cfg["clip_ratio_high"], clip_ratio_c=float(cfg["clip_ratio_c"]),
                        loss_agg_mode="token-mean" if micro_mean else cfg["loss_agg_mode"], entropy=ent,
                        entropy_coeff=self.ent_coef,
                        ref_log_prob=b["ref_logp"][sel] if self.ref is not None else None,
                        kl_coef=self.kl_coef, kl_type=cfg["kl_type"],
                        batch_num_tokens=b["mask"][sel].sum() * n_accum if micro_mean else n_tok,
                        global_batch_size=n_seq)
                    loss.backward()
                    for k, v in met.items():
                        acc.setdefault(k, []).append(float(v))
                if not len(rows_mb):      # all skipped: a zero gradient, so Adam's step
                    for p in self.model.parameters():  # still applies its momentum, as in verl
                        p.grad = torch.zeros_like(p)
                gnorms.append(clip_norm(self.model, cfg["grad_clip"]))
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return {"losses": acc, "gnorms": gnorms, "lr": lr, "skipped": skipped}

    def sync_weights(self) -> None:
        self.rollout.update_weights(self.model.state_dict())

    def metrics(self, r: Rollouts, stats: dict[str, Any], t0: float) -> dict[str, Any]:
        epochs = int(self.cfg["ppo_epochs"])
        now = time.perf_counter()
        t_train = now - r.times["train_start"]
        rewards, lengths = r.rewards, r.lengths
        resp_tokens = int(lengths.sum())
        train_tokens = int(r.batch["attn"].sum()) * epochs
        row = {"reward_mean": float(rewards.mean()),
               "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
               "accuracy": float((rewards == 1.0).float().mean()),
               "format_rate": float((rewards > 0).float().mean()),
               "response_length_mean": float(lengths.float().mean()),
               "truncated_rate": float(np.mean([not c.finished for c in r.comps])),
               "backtracks_mean": float(np.mean(r.backtracks)),
               **{k: float(np.mean(v)) for k, v in stats["losses"].items()},
               "grad_norm": float(np.mean(stats["gnorms"])), "lr": stats["lr"],
               "zero_adv_skipped_frac": stats["skipped"] / max(len(r.comps) * epochs, 1),
               "rollout_s": r.times["rollout_s"], "reward_s": r.times["reward_s"], "train_s": t_train,
               "step_s": now - t0,
               "rollout_tokens_per_s": resp_tokens / max(r.times["rollout_s"], 1e-9),
               "train_tokens_per_s": train_tokens / max(t_train, 1e-9),
               "tokens_per_s": resp_tokens / max(now - t0, 1e-9), **r.gap}
        if self.val_every and (self.step % self.val_every == 0 or self.step == self.steps):
            row.update(self.validate())
        self.tracker.log(self.step, **row)
        self.history.append(row)
        return row

    def validate(self) -> dict[str, float]:
        _, s = evaluate_rows(self.model, self.tok, self.val_rows,
                             {"temperature": 0.0, "top_p": 1.0, "batch_size": 256,
                              "max_new_tokens": self.rcfg["max_new_tokens"]},
                             seed=0, engine=self.rollout if self.backend == "vllm" else None)
        return {f"val/{k}": v for k, v in s.items() if k != "n"}

    def checkpoint_or_stop(self) -> None:
        """The model of an evaluation step kept (rl.eval_steps: the rl_eval stage evaluates it);
        an interval checkpoint; on a preemption request, a checkpoint (if this step has none) and
        Preempted."""
        if self.step in self.cfg["eval_steps"] and self.step < self.steps:
            ckpt.save_final_model(self.ctx.stage_dir, self.model, self.tok, self.step)
        save_every = int(self.cfg["save_every"])
        saved = False
        if save_every and self.step % save_every == 0 and self.step < self.steps:
            self.save()
            saved = True
        if self.ctx.preempt.requested:
            if not saved:
                self.save()
            self.tracker.close(finished=False)
            raise Preempted(f"grpo preempted at step {self.step}")

    def save(self) -> None:
        ckpt.save_checkpoint(self.ctx.stage_dir, self.step, self.model, self.tok, self.opt, self.sched,
                             extra={"data_position": self.step * self.bs}, keep=int(self.cfg["keep_checkpoints"]))

    def summary(self, wall_s: float) -> dict[str, Any]:
        tail = self.history[-5:]
        out = {"steps": self.steps, "params": num_params(self.model), "wall_s": wall_s, "device": str(self.device),
               "reward_mean_last5": float(np.mean([h["reward_mean"] for h in tail])) if tail else None,
               "accuracy_last5": float(np.mean([h["accuracy"] for h in tail])) if tail else None}
        if self.first_val:
            out["val_accuracy_start"] = self.first_val.get("val/accuracy")
        if self.history and "val/accuracy" in self.history[-1]:
            out["val_accuracy_end"] = self.history[-1]["val/accuracy"]
        return out


def run_grpo(ctx: StageContext) -> dict[str, Any]:
    return GRPOTrainer(ctx).fit()
