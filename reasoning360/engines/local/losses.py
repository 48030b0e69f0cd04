"""GRPO's tensor math, with verl's (0.9.1) names, signatures and semantics.

DESIGN.md promises that the local GRPO loss matches verl's, so a result from `engine=local`
and one from `engine=verl_*` mean the same thing. Everything here is a pure function of
tensors (no model, no config objects) so a test can compare it with
`verl.trainer.ppo.core_algos` value by value:

- `compute_grpo_outcome_advantage`   ~ core_algos.compute_grpo_outcome_advantage
- `compute_policy_loss`              ~ core_algos.compute_policy_loss (vanilla PPO clip + dual clip)
- `agg_loss`                         ~ core_algos.agg_loss (dp_size = 1)
- `kl_penalty`                       ~ core_algos.kl_penalty
- `masked_mean`, `masked_sum`, `entropy_from_logits`, `logprobs_from_logits` ~ verl.utils.torch_functional
- `actor_loss` combines them the way verl's actor does: pg - entropy_coeff*H + kl_coef*KL.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
                  "seq-mean-token-sum-norm")


def masked_sum(values: torch.Tensor, mask: torch.Tensor, axis=None) -> torch.Tensor:
    """Sum over `mask`; values outside the mask (even NaN) never count."""
    valid = torch.where(mask.bool(), values, torch.zeros_like(values))
    return valid.sum() if axis is None else valid.sum(dim=axis)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis=None) -> torch.Tensor:
    """Mean over `mask`; an empty mask gives 0 (verl adds 1e-8 to the count)."""
    count = mask.sum(dim=axis) if axis is not None else mask.sum()
    return masked_sum(values, mask, axis) / (count + 1e-8)


def agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str,
             dp_size: int = 1, batch_num_tokens: Optional[int] = None,
             global_batch_size: Optional[int] = None,
             loss_scale_factor: Optional[int] = None) -> torch.Tensor:
    """Reduce a (bs, response_length) loss matrix to a scalar.

    token-mean: sum over all valid tokens / number of valid tokens.
    seq-mean-token-mean: per sequence mean over its tokens, then mean over sequences that have any.
    seq-mean-token-sum: per sequence sum, then mean over sequences that have any.
    seq-mean-token-sum-norm: seq-mean-token-sum / loss_scale_factor (default response_length).
    """
    if loss_agg_mode == "token-mean":
        if batch_num_tokens is None:
            batch_num_tokens = loss_mask.sum()
        return masked_sum(loss_mat, loss_mask) / batch_num_tokens * dp_size
    if loss_agg_mode == "token-sum":
        return masked_sum(loss_mat, loss_mask) * dp_size
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)
        seq_mask = (torch.sum(loss_mask, dim=-1) > 0).float()
        if global_batch_size is None:
            global_batch_size = seq_mask.sum()
        loss = masked_sum(seq_losses, seq_mask) / global_batch_size * dp_size
        if loss_agg_mode == "seq-mean-token-sum-norm":
            loss = loss / (loss_scale_factor if loss_scale_factor is not None else loss_mask.shape[-1])
        return loss
    if loss_agg_mode == "seq-mean-token-mean":
        tokens = torch.sum(loss_mask, dim=-1)
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1) / (tokens + 1e-8)
        seq_mask = (tokens > 0).float()
        if global_batch_size is None:
            global_batch_size = seq_mask.sum()
        return masked_sum(seq_losses, seq_mask) / global_batch_size * dp_size
    raise ValueError(f"Invalid loss_agg_mode: {loss_agg_mode} (expected one of {LOSS_AGG_MODES})")


@torch.no_grad()
def compute_grpo_outcome_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                   index: Sequence | np.ndarray, epsilon: float = 1e-6,
                                   norm_adv_by_std_in_grpo: bool = True,
                                   config=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantage: (score - group mean) / (group std + eps), broadcast over the response.

    score = sum of token-level rewards of a response; a group = responses with the same
    `index` (same prompt). Unbiased std (torch.std). A group of one gets mean 0, std 1.
    Without std normalisation (Dr.GRPO) the advantage is score - mean. Returns (adv, adv).
    """
    scores = token_level_rewards.sum(dim=-1)
    _, inverse = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
    inverse = torch.as_tensor(inverse.reshape(-1), device=scores.device)
    adv = torch.empty_like(scores)
    for g in torch.unique(inverse).tolist():
        sel = inverse == g
        grp = scores[sel]
        if grp.numel() == 1:
            mean, std = torch.zeros((), dtype=scores.dtype), torch.ones((), dtype=scores.dtype)
        else:
            mean, std = grp.mean(), grp.std()
        adv[sel] = (grp - mean) / (std + epsilon) if norm_adv_by_std_in_grpo else grp - mean
    adv = adv.unsqueeze(-1) * response_mask
    return adv, adv


def policy_loss_terms(old_log_prob, log_prob, advantages, response_mask, cliprange_low: float,
                      cliprange_high: float, clip_ratio_c: float = 3.0):
    """Per-token clipped PPO losses and the clip/KL statistics (before aggregation)."""
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1.0, got {clip_ratio_c}")
    neg_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(neg_kl)
    ppo_kl = masked_mean(-neg_kl, response_mask)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - cliprange_low, 1 + cliprange_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses1).float(), response_mask)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_clipfrac_lower = masked_mean(torch.gt(clip_pg_losses1, pg_losses3) * (advantages < 0).float(),
                                    response_mask)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    return pg_losses, pg_clipfrac, ppo_kl, pg_clipfrac_lower


def compute_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                        response_mask: torch.Tensor, cliprange: Optional[float] = None,
                        cliprange_low: Optional[float] = None, cliprange_high: Optional[float] = None,
                        clip_ratio_c: float = 3.0, loss_agg_mode: str = "token-mean"):
    """Vanilla PPO clipped objective with verl's dual clip for negative advantages.

    Returns (pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower):
    ratio = exp(clamp(logp - old_logp, ±20)); loss = max(-A*ratio, -A*clip(ratio, 1-lo, 1+hi)),
    and for A < 0 additionally capped at -A*clip_ratio_c.
    """
    cliprange_low = cliprange if cliprange_low is None else cliprange_low
    cliprange_high = cliprange if cliprange_high is None else cliprange_high
    pg_losses, clipfrac, ppo_kl, clipfrac_lower = policy_loss_terms(
        old_log_prob, log_prob, advantages, response_mask, cliprange_low, cliprange_high, clip_ratio_c)
    return agg_loss(pg_losses, response_mask, loss_agg_mode), clipfrac, ppo_kl, clipfrac_lower


def kl_penalty_forward(logprob: torch.Tensor, ref_logprob: torch.Tensor, kl_penalty: str) -> torch.Tensor:
    if kl_penalty in ("kl", "k1"):
        return logprob - ref_logprob
    if kl_penalty == "abs":
        return (logprob - ref_logprob).abs()
    if kl_penalty in ("mse", "k2"):
        return 0.5 * (logprob - ref_logprob).square()
    if kl_penalty in ("low_var_kl", "k3"):
        # Schulman's k3 estimator, clamped as in verl for numerical stability.
        kl = torch.clamp(ref_logprob - logprob, min=-20, max=20)
        return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)
    raise NotImplementedError(f"kl_penalty={kl_penalty!r}")


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kl_penalty: str) -> torch.Tensor:
    """Per-token KL estimate; a trailing '+' (e.g. 'k3+') uses k2's gradient with the k3 value."""
    base = kl_penalty[:-1] if kl_penalty.endswith("+") else kl_penalty
    forward = kl_penalty_forward(logprob, ref_logprob, base)
    if not kl_penalty.endswith("+") or kl_penalty in ("mse", "k2"):
        return forward
    backward = 0.5 * (logprob - ref_logprob).square()
    return backward - backward.detach() + forward.detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dimension."""
    pd = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] for each position."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def actor_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
               response_mask: torch.Tensor, *, clip_ratio: float, loss_agg_mode: str = "token-mean",
               entropy: Optional[torch.Tensor] = None, entropy_coeff: float = 0.0,
               ref_log_prob: Optional[torch.Tensor] = None, kl_coef: float = 0.0,
               kl_type: str = "low_var_kl", clip_ratio_low: Optional[float] = None,
               clip_ratio_high: Optional[float] = None, clip_ratio_c: float = 3.0,
               batch_num_tokens=None, global_batch_size=None):
    """verl's actor objective: pg_loss - entropy_coeff * entropy + kl_coef * kl. Returns (loss, metrics).

    For a micro-batch of a larger mini-batch, pass the mini-batch's `batch_num_tokens`
    (token-mean) or `global_batch_size` (seq-mean-*) so micro-batch losses sum to the
    mini-batch loss, as verl's global_batch_info does.
    """
    lo = clip_ratio if clip_ratio_low is None else clip_ratio_low
    hi = clip_ratio if clip_ratio_high is None else clip_ratio_high
    pg_losses, clipfrac, ppo_kl, clipfrac_lower = policy_loss_terms(
        old_log_prob, log_prob, advantages, response_mask, lo, hi, clip_ratio_c)
    info = {"batch_num_tokens": batch_num_tokens, "global_batch_size": global_batch_size}
    pg_loss = agg_loss(pg_losses, response_mask, loss_agg_mode, **info)
    loss = pg_loss
    metrics = {"pg_loss": pg_loss.detach(), "pg_clipfrac": clipfrac.detach(), "ppo_kl": ppo_kl.detach(),
               "pg_clipfrac_lower": clipfrac_lower.detach()}
    if entropy is not None:
        ent = agg_loss(entropy, response_mask, loss_agg_mode, **info)
        loss = loss - entropy_coeff * ent
        metrics["entropy"] = ent.detach()
    if ref_log_prob is not None:
        kl = agg_loss(kl_penalty(log_prob, ref_log_prob, kl_type), response_mask, loss_agg_mode, **info)
        loss = loss + kl_coef * kl
        metrics["kl"] = kl.detach()
    return loss, metrics
