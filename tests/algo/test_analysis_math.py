"""The analyses' math (sqrt(KL) fits, robustness gap, best-of-N, Mahalanobis, AUROC) against hand-worked values."""

from __future__ import annotations

import math
import random

import pytest
import torch

from hh_ray.algo.analysis import (
    auroc,
    best_of_n_indices,
    divergence_index,
    fit_gaussian,
    kl_best_of_n,
    linear_fit,
    mahalanobis,
    mean_se,
    paired_gap,
    sqrt_kl_law,
)


def test_linear_fit_by_hand():
    f = linear_fit([0, 1, 2], [1, 3, 5])
    assert (f.slope, f.intercept, f.r2, f.n) == pytest.approx((2.0, 1.0, 1.0, 3))
    # mean x 1.5, mean y 0.5, Sxx 5, Sxy 1 -> slope 0.2, intercept 0.2; residuals -.2 .6 -.6 .2 -> SSres .8, SStot 1
    f = linear_fit([0, 1, 2, 3], [0, 1, 0, 1])
    assert (f.slope, f.intercept, f.r2) == pytest.approx((0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="all xs are equal"):
        linear_fit([1, 1], [0, 2])
    with pytest.raises(ValueError, match="2 xs but 3 ys"):
        linear_fit([0, 1], [0, 1, 2])


def test_sqrt_kl_law_early_and_whole():
    kls, scores = [0, 1, 4, 9, 16], [0, 1, 2, 2.5, 2.5]  # sqrt(KL) = 0..4: linear early, flattening later
    law = sqrt_kl_law(kls, scores)
    assert (law.early.slope, law.early.intercept, law.early.r2, law.early.n) == pytest.approx((1.0, 0.0, 1.0, 3))
    assert "first 3 of 5" in law.early_rule
    # whole: mean x 2, mean y 1.6, Sxy 6.5, Sxx 10 -> slope 0.65, intercept 0.3
    assert (law.whole.slope, law.whole.intercept) == pytest.approx((0.65, 0.3))
    assert law.whole.r2 < 1.0
    by_kl = sqrt_kl_law(kls, scores, early_max_kl=4.0)
    assert by_kl.early == law.early and "KL <= 4" in by_kl.early_rule
    assert sqrt_kl_law([-0.01, 1.0, 4.0], [0.0, 1.0, 2.0]).whole.slope == pytest.approx(1.0)  # k1 < 0 clips to 0
    assert sqrt_kl_law(kls, scores, early_max_kl=0.5).early is None  # one early point: no line


def test_paired_gap_and_divergence_rule():
    mean, se = paired_gap([1, 2, 3], [0, 0, 0])  # differences 1 2 3: sd 1, se 1/sqrt(3)
    assert (mean, se) == pytest.approx((2.0, 1 / math.sqrt(3)))
    assert mean_se([4.0, 0.0]) == pytest.approx((2.0, 2.0)) and mean_se([5.0]) == (5.0, math.inf)  # sd sqrt(8)
    ses = [0.1] * 6  # threshold 2 * sqrt(0.01 + 0.01) = 0.283 above the initial gap 0.1
    assert divergence_index([0.1, 0.2, 1.0, 0.5, 1.2, 1.5], ses) == 2
    assert divergence_index([0.0, 1.0, 0.0, 1.0, 1.0], ses[:5]) == 3  # the excursion at 1 falls back: not yet
    assert divergence_index([0.0, 1.0, 1.0, 0.1], ses[:4]) is None  # back together at the end
    assert divergence_index([0.0, 0.5], [0.3, 0.3]) is None  # 0.5 < 2 * sqrt(0.18) = 0.85: within noise
    assert divergence_index([0.0, -2.0], ses[:2]) is None  # the test PM ahead is not overfitting to the train PM


def test_kl_best_of_n():
    assert kl_best_of_n(1) == 0.0
    assert kl_best_of_n(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_best_of_n(4) == pytest.approx(math.log(4) - 0.75)
    assert kl_best_of_n(64) < math.log(64)
    with pytest.raises(ValueError, match="n >= 1"):
        kl_best_of_n(0)


def test_best_of_n_prefixes():
    s = torch.tensor([[1.0, 3.0, 2.0, 5.0], [4.0, 4.0, 1.0, 0.0]])
    assert best_of_n_indices(s, 1).tolist() == [0, 0]
    assert best_of_n_indices(s, 2).tolist() == [1, 0]  # tie at 4.0: the earliest sample
    assert best_of_n_indices(s, 4).tolist() == [3, 0]
    with pytest.raises(ValueError, match="n=5 outside 1..4"):
        best_of_n_indices(s, 5)


def test_mahalanobis_by_hand():
    g = fit_gaussian(torch.tensor([[-1.0], [1.0]]))  # mean 0, ML variance 1
    assert mahalanobis(torch.tensor([[2.0], [0.0]]), g).tolist() == pytest.approx([2.0, 0.0])
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])  # covariance diag(0.5, 2)
    g = fit_gaussian(x)
    assert float(mahalanobis(torch.tensor([[1.0, 1.0]]), g)) == pytest.approx(math.sqrt(1 / 0.5 + 1 / 2))
    g = fit_gaussian(x, shrinkage=1.0)  # all the way to tr(S)/d I = 1.25 I
    assert float(mahalanobis(torch.tensor([[1.0, 1.0]]), g)) == pytest.approx(math.sqrt(2 / 1.25))
    g = fit_gaussian(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), shrinkage=0.1)  # singular S: still finite
    assert torch.isfinite(mahalanobis(torch.tensor([[1.0, -1.0]]), g)).all()
    with pytest.raises(ValueError, match="shrinkage"):
        fit_gaussian(x, shrinkage=2.0)


def test_auroc_mann_whitney_with_ties():
    assert auroc([3, 2], [1, 0]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1], [1]) == 0.5
    # 0.5 vs (1, 0.5, 3): 0 + 0.5 + 0; 2 vs (1, 0.5, 3): 1 + 1 + 0 -> 2.5 / 6
    assert auroc([0.5, 2], [1, 0.5, 3]) == pytest.approx(2.5 / 6)
    rng = random.Random(0)
    pos = [rng.randint(0, 5) for _ in range(40)]
    neg = [rng.randint(0, 4) for _ in range(30)]
    pairwise = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (40 * 30)
    assert auroc(pos, neg) == pytest.approx(pairwise)
    with pytest.raises(ValueError, match="both classes"):
        auroc([], [1.0])


def test_auroc_se_matches_hanley_mcneil_by_hand():
    from hh_ray.algo.analysis import auroc_se

    # a = 0.8, 10 positives, 20 negatives: Q1 = 0.8/1.2 = 2/3, Q2 = 2(0.64)/1.8 = 0.71111;
    # se^2 = (0.16 + 9 (2/3 - 0.64) + 19 (0.71111 - 0.64)) / 200 = (0.16 + 0.24 + 1.35111) / 200 = 0.0087556
    assert auroc_se(0.8, 10, 20) == pytest.approx(0.0087556 ** 0.5, rel=1e-4)
    assert auroc_se(0.5, 200, 200) == pytest.approx(0.0289, abs=2e-4)  # chance with 200 a side: about 0.029
    with pytest.raises(ValueError, match="both classes"):
        auroc_se(0.7, 0, 5)
