"""PPO math against values worked by hand (no Ray, no models)."""

from __future__ import annotations

import math

import pytest
import torch

from hh_ray.algo.ppo import (
    KLController,
    behaviour_weights,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_k1,
    kl_k3,
    token_logprobs,
    token_rewards,
    whiten,
)


def approx(x, **kw):
    return pytest.approx(x, abs=1e-5, **kw)


def test_gae_by_hand():
    # one row, 3 tokens, gamma=0.9, lam=0.5
    r = torch.tensor([[1.0, 0.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, 1.5]])
    m = torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.5)
    # deltas: d2 = 2 - 1.5 = 0.5; d1 = 0 + 0.9*1.5 - 1 = 0.35; d0 = 1 + 0.9*1.0 - 0.5 = 1.4
    # A2 = 0.5; A1 = 0.35 + 0.45*0.5 = 0.575; A0 = 1.4 + 0.45*0.575 = 1.65875
    assert adv[0].tolist() == approx([1.65875, 0.575, 0.5])
    assert ret[0].tolist() == approx([2.15875, 1.575, 2.0])


def test_gae_ignores_padding_and_lambda_one_is_monte_carlo():
    r = torch.tensor([[0.0, 1.0, 9.0], [0.0, 0.0, 3.0]])
    v = torch.tensor([[0.2, 0.4, 7.0], [0.1, 0.1, 0.1]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # row 0 ends after 2 tokens; its 3rd entry is padding
    adv, ret = gae(r, v, m, gamma=1.0, lam=1.0)
    # gamma = lam = 1: returns are the sums of remaining rewards; padding contributes nothing
    assert ret[0].tolist() == approx([1.0, 1.0, 0.0])
    assert ret[1].tolist() == approx([3.0, 3.0, 3.0])
    assert adv[0].tolist() == approx([0.8, 0.6, 0.0])


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    # mean 2, population variance 2/3 -> (x - 2) / sqrt(2/3)
    s = math.sqrt(2 / 3)
    assert w[0].tolist() == approx([-1 / s, 0.0, 1 / s, 0.0])


def test_kl_estimators_by_hand():
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref = torch.tensor([math.log(0.25), math.log(0.5)])
    assert kl_k1(logp, ref).tolist() == approx([math.log(2), -math.log(2)])
    # k3 = r - 1 - log r, r = ref/p: r = 0.5 -> 0.5 - 1 + log 2; r = 2 -> 2 - 1 - log 2
    assert kl_k3(logp, ref).tolist() == approx([-0.5 + math.log(2), 1 - math.log(2)])
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_token_rewards_put_score_on_last_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = token_rewards(torch.tensor([2.0, -1.0]), kl, 0.5, m)
    assert r[0].tolist() == approx([-0.05, -0.1, 2.0 - 0.15])
    assert r[1].tolist() == approx([-1.0 - 0.25, 0.0, 0.0])


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    m = torch.ones(1, 3)
    loss, stats = clipped_policy_loss(logp, old, adv, m, clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5; token 2: max(2.2, 2.2) = 2.2
    assert float(loss) == approx(-1.2 - 0.5 + 2.2)
    assert float(stats["clipped_tokens"]) == 1.0


def test_decoupled_policy_loss_weights_tokens_by_proximal_over_behaviour():
    old = torch.zeros(1, 3)  # the proximal policy: the trainer's weights before the update
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1 against it, as above
    behaviour = torch.log(torch.tensor([[0.5, 2.0, 0.1]]))  # the older policy that sampled the tokens
    w = behaviour_weights(old, behaviour)
    assert w[0].tolist() == approx([2.0, 0.5, 5.0])  # 1/0.5, 1/2, and 1/0.1 = 10 truncated at the cap of 5
    adv, m = torch.tensor([[1.0, 1.0, -2.0]]), torch.ones(1, 3)
    loss, stats = clipped_policy_loss(logp, old, adv, m, clip=0.2, weights=w)
    # the per-token losses of the unweighted case (-1.2, -0.5, 2.2), each times its weight; clipping unchanged
    assert float(loss) == approx(2.0 * -1.2 + 0.5 * -0.5 + 5.0 * 2.2)
    assert float(stats["clipped_tokens"]) == 1.0


def test_clipped_value_loss_by_hand():
    v = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[0.0, 1.0]])
    loss, stats = clipped_value_loss(v, old, ret, torch.ones(1, 2), clip=0.5)
    # token 0: max((1-0)^2, (0.5-0)^2) = 1; token 1: max(1, 1) = 1; times 0.5 each
    assert float(loss) == approx(1.0)
    assert float(stats["value_clipped_tokens"]) == 0.0


def test_entropy_uniform_and_adaptive_kl():
    lp, ent = token_logprobs(torch.zeros(2, 4), torch.tensor([1, 3]), entropy="metric")
    assert ent.tolist() == approx([math.log(4)] * 2) and lp.tolist() == approx([-math.log(4)] * 2)
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # p = (1/4, 3/4)
    lp, ent = token_logprobs(logits, torch.tensor([1]), entropy="loss")
    assert float(lp) == approx(math.log(0.75))
    assert float(ent) == approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    ent.sum().backward()  # dH/dz0 = -p0 (log p0 + H) = -0.25 (log 0.25 + H)
    h = float(ent)
    assert float(logits.grad[0, 0]) == approx(-0.25 * (math.log(0.25) + h))
    assert token_logprobs(torch.zeros(1, 3), torch.tensor([0]))[1] is None
    ctl = KLController(0.1, target=1.0, horizon=100)
    assert ctl.update(2.0, 10) == approx(0.1 * (1 + 0.2 * 10 / 100))  # error clipped to +0.2
    assert ctl.update(0.9, 10) == approx(0.102 * (1 - 0.1 * 10 / 100))  # error -0.1 within the clip
    assert KLController(0.1).update(5.0, 10) == 0.1  # no target: the paper's constant lambda_KL


def test_pad_ragged_left_aligns_and_masks():
    from hh_ray.algo.ppo import pad_ragged

    x, m = pad_ragged([[1.0, 2.0], [], [3.0]])
    assert x.tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]
    assert m.tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert pad_ragged([])[0].shape == (0, 1)


def test_unpad_gives_back_the_float32_rows_pad_ragged_was_given():
    """What travels between driver and workers: float32 arrays of each response's length, unchanged by a round trip
    (1/3 is not a float32, so a float64 detour would show)."""
    import numpy as np

    from hh_ray.algo.ppo import pad_ragged, unpad

    rows = [np.array([1 / 3, -2.5], dtype=np.float32), np.zeros(0, dtype=np.float32), np.array([7.0], dtype=np.float32)]
    padded, mask = pad_ragged(rows)
    back = unpad(padded, [int(n) for n in mask.sum(1)])
    assert [r.dtype for r in back] == [np.float32] * 3
    assert [r.tolist() for r in back] == [r.tolist() for r in rows]
    assert pad_ragged(back)[0].equal(padded)


def test_minibatches_use_every_sample_once_per_epoch():
    import random

    from hh_ray.algo.batch import minibatches

    rng = random.Random(0)
    for n, parts in ((10, 3), (7, 7), (33, 4)):
        mbs = minibatches(n, parts, rng)
        assert len(mbs) == parts and sorted(i for mb in mbs for i in mb) == list(range(n))
        assert max(map(len, mbs)) - min(map(len, mbs)) <= 1


def test_advantages_use_trainer_logprobs_and_penalize_truncation():
    from hh_ray.algo.advantages import AdvantageConfig, compute_advantages
    from hh_ray.algo.batch import Experience

    # two samples; the second was cut at the cap. Behaviour logprobs differ from the trainer's (old): only old counts
    exp = Experience(prompt=[[1], [1]], response=[[5, 6], [7]], prompt_text=["p", "p"], response_text=["a", "b"],
                     finish=["stop", "length"], behaviour_logprobs=[[-9.0, -9.0], [-9.0]],
                     old_logprobs=[[-1.0, -2.0], [-1.0]], ref_logprobs=[[-1.5, -2.0], [-0.5]],
                     scores=[1.0, 1.0], old_values=[[0.0, 0.0], [0.0]])
    stats = compute_advantages(exp, 0.1, AdvantageConfig("gae", "k1", gamma=1.0, lam=1.0, whiten=False,
                                                         truncation_penalty=0.5))
    # k1 per sample: (0.5 + 0) and (-0.5); mean 0.0
    assert stats["objective/kl"] == approx(0.0) and stats["objective/kl_k1"] == approx(0.0)
    # rewards: sample 1 = [-0.05, 0 + 1.0]; sample 2 = [+0.05 + (1.0 - 0.5)]; with V = 0, gamma = lam = 1,
    # advantages are reward-to-go
    assert exp.advantages[0] == approx([0.95, 1.0]) and exp.advantages[1] == approx([0.55])
    assert stats["objective/truncated_share"] == approx(0.5) and stats["objective/pm_score"] == approx(1.0)
    # a stale batch (async: an older policy generated it): the KL measures that policy, the engine's logprobs
    stale = compute_advantages(exp, 0.1, AdvantageConfig("gae", "k1", gamma=1.0, lam=1.0, whiten=False), stale=True)
    assert stale["objective/kl"] == approx(((-9.0 + 1.5) + (-9.0 + 2.0) + (-9.0 + 0.5)) / 2)


def test_logprob_gap():
    from hh_ray.algo.ppo import logprob_gap

    assert logprob_gap([[-1.0, -2.0], [-3.0]], [[-1.0, -2.5], [-2.0]]) == approx((0.5, 1.0))
