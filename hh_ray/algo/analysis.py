"""The paper's analyses as small pure number/tensor functions (no Ray, no models, no files).

- the sqrt(KL) law: a least-squares line of PM score against sqrt(KL), early in training and over the run;
- robustness: where the train-PM and test-PM curves part ways;
- best-of-N: its KL from the initial policy, and the selection of the best of the first n samples;
- OOD detection: a Gaussian (Mahalanobis) fit on in-distribution activations, and AUROC (Mann-Whitney).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------------------------- sqrt(KL) law


@dataclass(frozen=True)
class LinearFit:
    """y = slope * x + intercept by least squares; r2 is the share of variance of y the line explains."""

    slope: float
    intercept: float
    r2: float
    n: int


def linear_fit(xs: list[float], ys: list[float]) -> LinearFit:
    """Ordinary least squares of ys on xs. R^2 is 1 when ys are constant and the line fits them exactly."""
    if len(xs) != len(ys):
        raise ValueError(f"linear_fit: {len(xs)} xs but {len(ys)} ys")
    if len(xs) < 2:
        raise ValueError(f"linear_fit needs at least 2 points, got {len(xs)}")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("linear_fit: all xs are equal, the slope is undefined")
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LinearFit(slope, intercept, r2, n)


@dataclass(frozen=True)
class SqrtKLLaw:
    """Fits of PM score against sqrt(KL): early in training and over the whole run."""

    early: LinearFit | None
    whole: LinearFit
    early_rule: str  # how the early points were chosen, for the report


def sqrt_kl_law(kls: list[float], scores: list[float], early_max_kl: float | None = None) -> SqrtKLLaw:
    """Bai et al. find PM score ~ linear in sqrt(KL(policy || initial)) early in RL training.

    `kls` are the held-out evaluation points' KL (nats; negative k1 estimates clip to 0), in training order.
    Early points are those with KL <= `early_max_kl` when given, else the first half of the points (rounded up).
    `early` is None when fewer than 2 distinct early points exist.
    """
    if len(kls) != len(scores):
        raise ValueError(f"sqrt_kl_law: {len(kls)} KL values but {len(scores)} scores")
    xs = [math.sqrt(max(k, 0.0)) for k in kls]
    if early_max_kl is None:
        k = (len(xs) + 1) // 2
        early_idx, rule = list(range(k)), f"first {k} of {len(xs)} evaluation points"
    else:
        early_idx = [i for i, kl in enumerate(kls) if kl <= early_max_kl]
        rule = f"evaluation points with KL <= {early_max_kl:g} nats ({len(early_idx)} of {len(xs)})"
    ex, ey = [xs[i] for i in early_idx], [scores[i] for i in early_idx]
    early = linear_fit(ex, ey) if len(set(ex)) >= 2 else None
    return SqrtKLLaw(early=early, whole=linear_fit(xs, scores), early_rule=rule)


# ----------------------------------------------------------------------------------------------- robustness


def mean_se(xs: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); inf for a single value."""
    n = len(xs)
    mean = sum(xs) / n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n > 1 else math.inf


def paired_gap(train_scores: list[float], test_scores: list[float]) -> tuple[float, float]:
    """Mean and standard error of train-PM minus test-PM score over the same samples (paired)."""
    if len(train_scores) != len(test_scores) or not train_scores:
        raise ValueError(f"paired_gap: need equal non-empty lists, got {len(train_scores)} and {len(test_scores)}")
    return mean_se([a - b for a, b in zip(train_scores, test_scores)])


def divergence_index(gaps: list[float], gap_ses: list[float], z: float = 2.0) -> int | None:
    """Where the train-PM and test-PM curves part ways, by a stated rule; None if they never do.

    Point 0 is the initial policy (before RL), whose gap is the PMs' offset on unoptimized samples. The curves
    part ways at the first evaluation point i >= 1 such that, at i and at every later point j,
    gap_j - gap_0 > z * sqrt(se_j^2 + se_0^2): the train PM's lead over the test PM has grown beyond z standard
    errors of noise and stays so (a single noisy excursion does not count).
    """
    if len(gaps) != len(gap_ses):
        raise ValueError(f"divergence_index: {len(gaps)} gaps but {len(gap_ses)} standard errors")
    apart = [g - gaps[0] > z * math.sqrt(s * s + gap_ses[0] ** 2) for g, s in zip(gaps, gap_ses)]
    first = None
    for i in range(len(apart) - 1, 0, -1):
        if not apart[i]:
            break
        first = i
    return first


# ----------------------------------------------------------------------------------------------- best-of-N


def kl_best_of_n(n: int) -> float:
    """KL(best-of-n || initial policy) = log n - (n - 1) / n nats (Stiennon et al. 2020; Bai et al. 2022)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_indices(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Per prompt, the index of the highest-scoring of the first n samples ([P, N] scores, n <= N).

    Taking prefixes of one set of N i.i.d. samples gives an unbiased best-of-n for every n <= N. Ties go to the
    earliest sample.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [prompts, samples], got shape {tuple(scores.shape)}")
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"n={n} outside 1..{scores.shape[1]} samples per prompt")
    return scores[:, :n].argmax(dim=1)


# ------------------------------------------------------------------------------------------- OOD detection


@dataclass(frozen=True)
class Gaussian:
    """Mean and precision (inverse covariance) of in-distribution activations."""

    mean: torch.Tensor
    precision: torch.Tensor


def fit_gaussian(x: torch.Tensor, shrinkage: float = 0.0) -> Gaussian:
    """Fit mean and covariance to rows of x ([n, d]); shrink the covariance toward a scaled identity.

    Sigma = (1 - a) S + a (tr S / d) I with S the maximum-likelihood covariance (divide by n) and a = `shrinkage`
    in [0, 1]. Activations have d comparable to n here, so S alone is often singular; a small a keeps it
    invertible without changing the directions much.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"fit_gaussian needs [n >= 2, d] activations, got shape {tuple(x.shape)}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    x = x.double()
    mean = x.mean(0)
    c = x - mean
    cov = c.T @ c / x.shape[0]
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * (torch.trace(cov) / d) * torch.eye(d, dtype=cov.dtype)
    return Gaussian(mean=mean, precision=torch.linalg.pinv(cov, hermitian=True))


def mahalanobis(x: torch.Tensor, g: Gaussian) -> torch.Tensor:
    """Mahalanobis distance sqrt((x - mu)^T P (x - mu)) of each row of x: the OOD score (higher = stranger)."""
    c = x.double() - g.mean
    return torch.einsum("nd,de,ne->n", c, g.precision, c).clamp_min(0).sqrt()


def auroc(positive: list[float], negative: list[float]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative) + 0.5 P(tie) (Mann-Whitney U).

    Computed from mid-ranks over the pooled scores, so ties count half, in O(n log n).
    """
    if not positive or not negative:
        raise ValueError(f"auroc needs both classes, got {len(positive)} positives and {len(negative)} negatives")
    pooled = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative], key=lambda t: t[0])
    rank_sum_pos = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        mid_rank = (i + j) / 2 + 1  # ranks are 1-based; tied scores share the mean of their ranks
        rank_sum_pos += mid_rank * sum(lbl for _, lbl in pooled[i : j + 1])
        i = j + 1
    n_pos, n_neg = len(positive), len(negative)
    u = rank_sum_pos - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def auroc_se(a: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC `a` from n_pos positives and n_neg negatives (Hanley & McNeil 1982):
    Q1 = a / (2 - a), Q2 = 2a^2 / (1 + a),
    se^2 = (a (1 - a) + (n_pos - 1)(Q1 - a^2) + (n_neg - 1)(Q2 - a^2)) / (n_pos n_neg)."""
    if n_pos < 1 or n_neg < 1 or not 0.0 <= a <= 1.0:
        raise ValueError(f"auroc_se needs 0 <= a <= 1 and both classes, got a={a}, {n_pos} and {n_neg}")
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return max(var, 0.0) ** 0.5
