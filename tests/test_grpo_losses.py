"""GRPO math of the local engine against hand-computed values (verl 0.9.1 semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reasoning360.engines.local import losses as L
from reasoning360.engines.local.grpo import build_batch, gather_response
from reasoning360.rollout.sampler import Completion


def _rewards(scores, T=3, lengths=None):
    """Outcome rewards on the last response token, as the trainer builds them."""
    lengths = lengths or [T] * len(scores)
    r = torch.zeros(len(scores), T)
    m = torch.zeros(len(scores), T)
    for i, (s, n) in enumerate(zip(scores, lengths)):
        r[i, n - 1] = s
        m[i, :n] = 1
    return r, m


def test_grpo_advantage_group_normalisation():
    scores = [1.0, 0.1, 0.0, 1.0, 0.1, 0.1]
    r, m = _rewards(scores, lengths=[3, 2, 1, 3, 3, 2])
    adv, ret = L.compute_grpo_outcome_advantage(r, m, np.array(["a", "a", "a", "a", "b", "b"]))
    g = [1.0, 0.1, 0.0, 1.0]
    mean = sum(g) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in g) / 3)          # unbiased, as torch.std
    expect = [(x - mean) / (std + 1e-6) for x in g]
    for i in range(4):
        assert adv[i, 0].item() == pytest.approx(expect[i], abs=1e-6)
    # group "b" has equal scores: std 0 -> (0)/(0+eps) = 0, no NaN
    assert torch.all(adv[4:] == 0)
    # broadcast over the response only: masked positions are exactly 0
    assert adv[1, 2].item() == 0.0 and adv[2, 1].item() == 0.0 and adv[2, 0].item() != 0.0
    assert torch.equal(adv, ret)


def test_grpo_advantage_eps_singleton_and_no_std():
    r, m = _rewards([0.3, 0.5, 1.0])
    adv, _ = L.compute_grpo_outcome_advantage(r, m, np.array([0, 1, 1]), epsilon=0.5)
    assert adv[0, 0].item() == pytest.approx(0.3 / 1.5, abs=1e-6)     # singleton: mean 0, std 1
    std = math.sqrt(((0.5 - 0.75) ** 2 + (1.0 - 0.75) ** 2) / 1)
    assert adv[1, 0].item() == pytest.approx(-0.25 / (std + 0.5), abs=1e-6)
    adv2, _ = L.compute_grpo_outcome_advantage(r, m, np.array([0, 1, 1]), norm_adv_by_std_in_grpo=False)
    assert adv2[:, 0].tolist() == pytest.approx([0.3, -0.25, 0.25], abs=1e-6)


def test_policy_loss_clipping_both_signs():
    old = torch.zeros(1, 6)
    ratios = torch.tensor([[1.5, 0.5, 1.5, 0.5, 1.1, 5.0]])
    new = torch.log(ratios)
    A = torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0, -1.0]])
    mask = torch.ones(1, 6)
    loss, clipfrac, ppo_kl, clip_lower = L.compute_policy_loss(old, new, A, mask, cliprange=0.2)
    # A>0, r=1.5: max(-1.5, -1.2) = -1.2 (clipped);  A>0, r=0.5: max(-0.5, -0.8) = -0.5
    # A<0, r=1.5: max(1.5, 1.2) = 1.5;               A<0, r=0.5: max(0.5, 0.8) = 0.8 (clipped)
    # A>0, r=1.1 inside: -2.2;                       A<0, r=5: max(5, 1.2)=5 -> dual clip min(3, 5)=3
    per_token = [-1.2, -0.5, 1.5, 0.8, -2.2, 3.0]
    assert loss.item() == pytest.approx(sum(per_token) / 6, abs=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 6, abs=1e-6)          # tokens 0 and 3
    assert clip_lower.item() == pytest.approx(1 / 6, abs=1e-6)        # token 5
    assert ppo_kl.item() == pytest.approx(-new.mean().item(), abs=1e-6)


def test_policy_loss_masking_and_aggregation():
    old = torch.zeros(2, 3)
    new = torch.zeros(2, 3)                                           # ratio 1
    A = torch.tensor([[1.0, 2.0, 1e6], [3.0, float("nan"), float("nan")]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    tok, *_ = L.compute_policy_loss(old, new, A, mask, cliprange=0.2, loss_agg_mode="token-mean")
    assert tok.item() == pytest.approx(-(1 + 2 + 3) / 3)             # masked 1e6 / NaN never count
    A = torch.nan_to_num(A, nan=7.0)    # seq-mean modes multiply by the mask, as verl does (NaN-unsafe)
    smtm, *_ = L.compute_policy_loss(old, new, A, mask, cliprange=0.2, loss_agg_mode="seq-mean-token-mean")
    assert smtm.item() == pytest.approx(-((1 + 2) / 2 + 3) / 2, abs=1e-6)
    smts, *_ = L.compute_policy_loss(old, new, A, mask, cliprange=0.2, loss_agg_mode="seq-mean-token-sum")
    assert smts.item() == pytest.approx(-(3 + 3) / 2, abs=1e-6)
    with pytest.raises(ValueError):
        L.agg_loss(A, mask, "mean-of-nothing")


def test_agg_skips_empty_sequences_and_micro_batches_sum_up():
    loss_mat = torch.tensor([[1.0, 2.0], [5.0, 5.0], [4.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert L.agg_loss(loss_mat, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    # micro-batches with the mini-batch's token count add up to the mini-batch loss
    whole = L.agg_loss(loss_mat, mask, "token-mean")
    parts = sum(L.agg_loss(loss_mat[s], mask[s], "token-mean", batch_num_tokens=mask.sum())
                for s in (slice(0, 1), slice(1, 3)))
    assert parts.item() == pytest.approx(whole.item())


def test_low_var_kl():
    lp = torch.tensor([0.0, -1.0, -30.0])
    ref = torch.tensor([0.0, -2.0, 0.0])
    kl = L.kl_penalty(lp, ref, "low_var_kl")
    assert kl[0].item() == 0.0
    d = -2.0 - (-1.0)
    assert kl[1].item() == pytest.approx(math.exp(d) - d - 1, abs=1e-6)
    assert kl[2].item() == 10.0                                       # clamped at +10
    assert L.kl_penalty(lp, ref, "k1").tolist() == pytest.approx([0.0, 1.0, -30.0])
    # k3+: k3's value, k2's gradient
    x = torch.tensor([-1.0], requires_grad=True)
    v = L.kl_penalty(x, torch.tensor([-2.0]), "k3+")
    v.sum().backward()
    assert v.item() == pytest.approx(kl[1].item(), abs=1e-6)
    assert x.grad.item() == pytest.approx(1.0)                        # d/dx 0.5 (x - ref)^2


def test_actor_loss_combines_terms():
    torch.manual_seed(0)
    old = torch.randn(4, 5)
    new = (old + 0.1 * torch.randn(4, 5)).requires_grad_()
    ref = old + 0.2
    A = torch.randn(4, 1).expand(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    ent = torch.rand(4, 5)
    loss, met = L.actor_loss(new, old, A, mask, clip_ratio=0.2, entropy=ent, entropy_coeff=0.01,
                             ref_log_prob=ref, kl_coef=0.05)
    pg = L.compute_policy_loss(old, new, A, mask, cliprange=0.2)[0]
    expect = pg - 0.01 * L.agg_loss(ent, mask, "token-mean") + \
        0.05 * L.agg_loss(L.kl_penalty(new, ref, "low_var_kl"), mask, "token-mean")
    assert loss.item() == pytest.approx(expect.item(), abs=1e-6)
    assert set(met) >= {"pg_loss", "pg_clipfrac", "ppo_kl", "entropy", "kl"}


def test_gradient_only_through_completion_tokens():
    """The loss reaches the logits only at positions that predict response tokens."""
    prompts = [[1, 5, 6, 7], [1, 8]]
    comps = [Completion([9, 10, 2], [-0.5, -0.6, -0.7], "", True),
             Completion([11, 2], [-0.1, -0.2], "", True)]
    b = build_batch(prompts, comps, pad_id=0, device="cpu")
    N, Lmax = b["ids"].shape
    logits = torch.randn(N, Lmax, 16, requires_grad=True)
    logp, _ = gather_response(logits, b["gather"], b["resp"], 1.0, False)
    adv = torch.tensor([[1.0], [-1.0]]) * b["mask"]
    assert b["old_logp"][0].tolist() == pytest.approx([-0.5, -0.6, -0.7])
    # on-policy (ratio 1): nothing clipped, so every response token gets a gradient
    loss, _ = L.actor_loss(logp, logp.detach(), adv, b["mask"], clip_ratio=0.2)
    loss.backward()
    touched = logits.grad.abs().sum(-1) > 0
    # row 0: prompt of 4 -> positions 3,4,5 predict the 3 response tokens
    assert touched[0].tolist() == [False, False, False, True, True, True, False][:Lmax]
    # row 1: prompt of 2 -> positions 1,2; everything after (padding) gets nothing
    assert touched[1].tolist() == [False, True, True] + [False] * (Lmax - 3)
    # the gathered log-probs are those of the response tokens
    lp = torch.log_softmax(logits.detach(), -1)
    assert logp[0, 0].item() == pytest.approx(lp[0, 3, 9].item(), abs=1e-6)
    assert logp[1, 1].item() == pytest.approx(lp[1, 2, 2].item(), abs=1e-6)
