"""Advantage estimators by name, GRPO's group-relative advantages against values worked by hand, and the
algorithm specs the loop asks for its trainer roles."""

from __future__ import annotations

import pytest
import torch
from pytest import approx

from hh_ray.algo.advantages import ADVANTAGE_ESTIMATORS, AdvantageConfig, compute_advantages, group_relative_advantages
from hh_ray.algo.algorithms import ALGORITHMS
from hh_ray.algo.batch import Experience


def test_estimators_and_algorithms_are_registered_by_name():
    assert {"gae", "grpo"} <= set(ADVANTAGE_ESTIMATORS)
    assert all(spec.estimator in ADVANTAGE_ESTIMATORS for spec in ALGORITHMS.values())
    assert ALGORITHMS["ppo"].roles == ("policy", "critic") and ALGORITHMS["grpo"].roles == ("policy",)
    assert ALGORITHMS["grpo"].min_samples_per_prompt == 2 and not ALGORITHMS["grpo"].needs_critic


def test_group_relative_advantages_by_hand():
    # group 1: [1, 2, 3], mean 2, sample std sqrt(((-1)^2 + 0 + 1^2) / 2) = 1 -> [-1, 0, 1]
    # group 2: [0, 0, 6], mean 2, std sqrt((4 + 4 + 16) / 2) = sqrt(12) -> [-2, -2, 4] / sqrt(12)
    out = group_relative_advantages(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0]), group_size=3, eps=0.0)
    s12 = 12 ** 0.5
    assert out.tolist() == approx([-1.0, 0.0, 1.0, -2 / s12, -2 / s12, 4 / s12])
    # eps in the denominator: [1, 3] has mean 2, sample std sqrt((1 + 1) / 1) = sqrt(2) -> (3 - 2) / (sqrt(2) + 0.5)
    assert float(group_relative_advantages(torch.tensor([1.0, 3.0]), 2, eps=0.5)[1]) == approx(1 / (2 ** 0.5 + 0.5))
    # a group whose samples all scored the same teaches nothing: advantage 0, not 0/0
    assert group_relative_advantages(torch.tensor([0.7, 0.7]), 2).tolist() == [0.0, 0.0]


def _exp(scores, old, ref, finish=None):
    n = len(scores)
    return Experience(prompt=[[1]] * n, response=[[5] * len(r) for r in old], prompt_text=["p"] * n,
                      response_text=["r"] * n, finish=finish or ["stop"] * n, behaviour_logprobs=old,
                      old_logprobs=old, ref_logprobs=ref, scores=scores)


def test_grpo_broadcasts_the_group_advantage_of_the_kl_shaped_return_over_tokens():
    # prompt A: two samples; prompt B: two samples (group_size 2, adjacent)
    old = [[-1.0, -1.0], [-1.0], [-2.0, -2.0, -2.0], [-2.0]]
    ref = [[-1.5, -1.5], [-1.0], [-2.0, -2.0, -2.0], [-2.0]]
    exp = _exp([1.0, 0.0, 0.5, 0.5], old, ref, finish=["stop", "stop", "length", "stop"])
    cfg = AdvantageConfig("grpo", "k1", truncation_penalty=0.5, group_size=2)
    stats = compute_advantages(exp, 0.1, cfg)
    # returns: A1 = 1.0 - 0.1 * (0.5 + 0.5) = 0.9, A2 = 0.0; B1 = 0.5 - 0.5 (cut at the cap) = 0.0, B2 = 0.5
    # group A: mean 0.45, sample std |0.9 - 0| / sqrt(2) = 0.6364 -> +-0.45 / 0.6364 = +-0.7071 (= 1 / sqrt 2)
    # group B: mean 0.25, std 0.5 / sqrt(2) -> -+0.7071
    h = 2 ** -0.5
    assert exp.advantages == [approx([h, h], abs=1e-5), approx([-h], abs=1e-5), approx([-h] * 3, abs=1e-5),
                              approx([h], abs=1e-5)]
    assert exp.returns == []  # nothing for a critic to learn: there is none
    assert stats["objective/reward"] == approx((0.9 + 0.0 + 0.0 + 0.5) / 4)
    assert stats["objective/kl"] == approx(1.0 / 4) and "critic/value_mean" not in stats


def test_grpo_ignores_the_settings_of_gae():
    """gamma, lam and whitening are GAE's: the same batch gets the same GRPO advantages under any of them."""
    old, ref = [[-1.0, -3.0], [-1.0], [-2.0], [-0.5, -0.5]], [[-1.0, -2.0], [-1.0], [-2.0], [-1.0, -0.5]]
    runs = []
    for gamma, lam, whiten in ((1.0, 0.95, True), (0.5, 0.0, False)):
        exp = _exp([0.3, 0.1, 0.9, 0.2], old, ref)
        compute_advantages(exp, 0.05, AdvantageConfig("grpo", "k3", gamma, lam, whiten, group_size=2))
        runs.append([row.tolist() for row in exp.advantages])
    assert runs[0] == runs[1]


def test_a_batch_of_partial_groups_is_refused_not_mixed_across_prompts():
    with pytest.raises(RuntimeError):
        group_relative_advantages(torch.tensor([1.0, 2.0, 3.0]), group_size=2)
