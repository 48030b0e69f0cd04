"""The local engine's GRPO math equals verl's core_algos on the same random tensors (1e-6).

DESIGN.md: "the local GRPO loss matches verl's". Compared: compute_grpo_outcome_advantage
(with/without std normalisation, singleton groups), the vanilla PPO-clip policy loss (verl's
compute_policy_loss and the registered get_policy_loss_fn('vanilla') with an actor config built
from verl's own config), kl_penalty (low_var_kl and the others), agg_loss in every mode, and the
actor objective pg - entropy_coeff * H + kl_coef * KL the way verl's ppo_loss composes it.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_verl_support import needs_verl, verl_config_dir

pytestmark = needs_verl

ATOL = 1e-6
AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def _batch(seed: int, bs: int = 24, T: int = 17):
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (bs,), generator=g)
    lengths[3] = 0                                      # one empty response
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    old = -torch.rand(bs, T, generator=g) * 3
    new = old + torch.randn(bs, T, generator=g) * 0.3
    new[0, 0] = old[0, 0] + 25.0                        # beyond the ±20 clamp
    ref = old + torch.randn(bs, T, generator=g) * 0.5
    adv = torch.randn(bs, T, generator=g) * mask
    ent = torch.rand(bs, T, generator=g) * 2
    return lengths, mask, old, new, ref, adv, ent


def _close(a, b) -> bool:
    import torch

    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=ATOL, rtol=0)


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_advantage_matches_verl(norm):
    import torch
    from verl.trainer.ppo import core_algos as V

    from reasoning360.engines.local import losses as L

    lengths, mask, *_ = _batch(0)
    bs, T = mask.shape
    g = torch.Generator().manual_seed(1)
    scores = torch.tensor([0.0, 0.1, 1.0])[torch.randint(0, 3, (bs,), generator=g)]
    tlr = torch.zeros(bs, T)
    last = (lengths - 1).clamp(min=0)
    tlr[torch.arange(bs), last] = scores * (lengths > 0)
    index = np.array([f"p{i // 5}" for i in range(bs - 1)] + ["single"], dtype=object)   # 5 groups of 5 (+1)
    want, want_ret = V.compute_grpo_outcome_advantage(tlr, mask, index, norm_adv_by_std_in_grpo=norm)
    got, got_ret = L.compute_grpo_outcome_advantage(tlr, mask, index, norm_adv_by_std_in_grpo=norm)
    assert _close(got, want) and _close(got_ret, want_ret)


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("clip", [(0.2, None, None), (0.2, 0.1, 0.28)])
def test_policy_loss_matches_verl(mode, clip):
    from verl.trainer.ppo import core_algos as V

    from reasoning360.engines.local import losses as L

    _, mask, old, new, _, adv, _ = _batch(2)
    eps, lo, hi = clip
    want = V.compute_policy_loss(old, new, adv, mask, cliprange=eps, cliprange_low=lo, cliprange_high=hi,
                                 clip_ratio_c=3.0, loss_agg_mode=mode)
    got = L.compute_policy_loss(old, new, adv, mask, cliprange=eps, cliprange_low=lo, cliprange_high=hi,
                                clip_ratio_c=3.0, loss_agg_mode=mode)
    for a, b in zip(got, want):
        assert _close(a, b)


def _actor_config(clip_ratio: float, mode: str):
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=[
            f"actor_rollout_ref.actor.clip_ratio={clip_ratio}", f"actor_rollout_ref.actor.clip_ratio_low={clip_ratio}",
            f"actor_rollout_ref.actor.clip_ratio_high={clip_ratio}", f"actor_rollout_ref.actor.loss_agg_mode={mode}",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_registered_vanilla_policy_loss_matches_local():
    """get_policy_loss_fn('vanilla') — what verl's actor actually calls — with verl's ActorConfig."""
    from verl.trainer.ppo import core_algos as V

    from reasoning360.engines.local import losses as L

    _, mask, old, new, _, adv, _ = _batch(3)
    for mode in ("token-mean", "seq-mean-token-mean"):
        cfg = _actor_config(0.2, mode)
        cfg.global_batch_info.update({"dp_size": 1, "batch_num_tokens": None, "global_batch_size": None,
                                      "loss_scale_factor": None})
        fn = V.get_policy_loss_fn("vanilla")
        pg, metrics = fn(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                         loss_agg_mode=mode, config=cfg)
        lpg, clipfrac, ppo_kl, lower = L.compute_policy_loss(old, new, adv, mask, cliprange=0.2, loss_agg_mode=mode)
        assert _close(lpg, pg)
        assert _close(clipfrac, metrics["actor/pg_clipfrac"]) and _close(ppo_kl, metrics["actor/ppo_kl"])
        assert _close(lower, metrics["actor/pg_clipfrac_lower"])


@pytest.mark.parametrize("kind", ["low_var_kl", "k3", "kl", "k1", "abs", "mse", "k2", "k3+", "low_var_kl+"])
def test_kl_penalty_matches_verl(kind):
    import torch
    from verl.trainer.ppo import core_algos as V

    from reasoning360.engines.local import losses as L

    _, _, old, new, ref, _, _ = _batch(4)
    ref = ref.clone()
    ref[1, 1] = new[1, 1] + 30.0                        # exercises the clamps
    a = new.clone().requires_grad_(True)
    b = new.clone().requires_grad_(True)
    want, got = V.kl_penalty(a, ref, kind), L.kl_penalty(b, ref, kind)
    assert _close(got.detach(), want.detach())
    want.sum().backward()
    got.sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=ATOL)    # the "+" variants use k2's gradient


@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_loss_matches_verl(mode):
    from verl.trainer.ppo import core_algos as V

    from reasoning360.engines.local import losses as L

    _, mask, old, new, _, _, ent = _batch(5)
    assert _close(L.agg_loss(ent, mask, mode), V.agg_loss(ent, mask, mode))
    n_tok, n_seq = mask.sum(), (mask.sum(-1) > 0).sum()
    assert _close(L.agg_loss(ent, mask, mode, batch_num_tokens=n_tok, global_batch_size=n_seq),
                  V.agg_loss(ent, mask, mode, batch_num_tokens=n_tok, global_batch_size=n_seq))


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_actor_objective_matches_verl_composition(mode):
    """verl's ppo_loss (workers/utils/losses.py): policy_loss = pg - entropy_coeff * agg(H)
    + kl_loss_coef * agg(kl_penalty(logp, ref, kl_loss_type)); the local actor_loss must agree."""
    from verl.trainer.ppo import core_algos as V

    from reasoning360.engines.local import losses as L

    _, mask, old, new, ref, adv, ent = _batch(6)
    n_tok, n_seq = mask.sum(), (mask.sum(-1) > 0).sum()
    info = {"dp_size": 1, "batch_num_tokens": n_tok, "global_batch_size": n_seq, "loss_scale_factor": None}
    cfg = _actor_config(0.2, mode)
    cfg.global_batch_info.update(info)
    pg, _ = V.get_policy_loss_fn("vanilla")(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                                            loss_agg_mode=mode, config=cfg)
    ent_coef, kl_coef = 0.01, 0.05
    want = (pg - ent_coef * V.agg_loss(ent, mask, mode, **info)
            + kl_coef * V.agg_loss(V.kl_penalty(new, ref, "low_var_kl"), mask, mode, **info))
    got, metrics = L.actor_loss(new, old, adv, mask, clip_ratio=0.2, loss_agg_mode=mode, entropy=ent,
                                entropy_coeff=ent_coef, ref_log_prob=ref, kl_coef=kl_coef, kl_type="low_var_kl",
                                batch_num_tokens=n_tok, global_batch_size=n_seq)
    assert _close(got, want)
    assert _close(metrics["pg_loss"], pg)
