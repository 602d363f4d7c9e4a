"""Elo ratings of policy versions from pairwise comparisons: Bradley-Terry maximum a posteriori.

Model: P(i beats j) = sigmoid(r_i - r_j), r in logits. Every comparison counts (a tie counts half a win each
way). Ratings maximize

    sum_{comparisons} [s log sigmoid(r_i - r_j) + (1 - s) log sigmoid(r_j - r_i)]  -  sum_i r_i^2 / (2 prior_sd^2)

The prior is a weak zero-mean Gaussian on every rating (default sd 2 logits, about 350 Elo): it keeps a player
that never lost (or never won) finite, where the maximum-likelihood rating is infinite, and barely moves
ratings backed by many games. `prior_sd=None` is plain maximum likelihood, which exists only when every player
has beaten, directly or through others, every other player (the comparison graph is strongly connected);
otherwise a ValueError says who is unbounded.

Elo scale: 400 / ln 10 (~173.7) Elo points per logit, so a 400-point gap means 10:1 odds. Anchor: version 0
(the initial policy) is 0 by default, so the ratings read as "Elo gained over the initial policy";
`anchor=None` centres them at mean 0 instead.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

ELO_PER_LOGIT = 400.0 / math.log(10.0)


@dataclass(frozen=True)
class Comparison:
    """One judgement between versions a and b; outcome 1.0 if a won, 0.0 if b won, 0.5 for a tie."""

    a: int
    b: int
    outcome: float


@dataclass(frozen=True)
class EloRatings:
    """Elo per version (index = version), with bootstrap interval bounds (equal to elo when not bootstrapped)."""

    elo: list[float]
    lo: list[float]
    hi: list[float]
    games: list[int]
    prior_sd: float | None
    anchor: int | None
    confidence: float
    bootstraps: int


def _win_matrix(comparisons: list[Comparison], n: int) -> torch.Tensor:
    w = torch.zeros(n, n, dtype=torch.float64)
    for c in comparisons:
        if not (0 <= c.a < n and 0 <= c.b < n) or c.a == c.b:
            raise ValueError(f"bad comparison {c}: versions must differ and lie in 0..{n - 1}")
        if not 0.0 <= c.outcome <= 1.0:
            raise ValueError(f"bad comparison {c}: outcome must be in [0, 1]")
        w[c.a, c.b] += c.outcome
        w[c.b, c.a] += 1.0 - c.outcome
    return w


def _unbounded_players(w: torch.Tensor) -> list[int]:
    """Players outside the largest set every member of which beats every other through some chain of wins.

    MLE exists iff the directed "i beat j" graph is strongly connected (Zermelo 1929; Ford 1957).
    """
    n = w.shape[0]
    beat = (w > 0).tolist()

    def reach(start: int, forward: bool) -> set[int]:
        seen, stack = {start}, [start]
        while stack:
            i = stack.pop()
            for j in range(n):
                if j not in seen and (beat[i][j] if forward else beat[j][i]):
                    seen.add(j)
                    stack.append(j)
        return seen

    component = reach(0, True) & reach(0, False)
    return [i for i in range(n) if i not in component]


def bradley_terry_logits(w: torch.Tensor, prior_sd: float | None = 2.0, iters: int = 100,
                         tol: float = 1e-10) -> torch.Tensor:
    """MAP (or ML) logit ratings from a win matrix w[i, j] = wins of i over j, mean 0, by Newton's method.

    The log posterior is concave; Newton converges in a handful of steps. Without a prior the Hessian is
    singular along the all-ones direction (only differences matter); steps stay in the mean-0 subspace.
    """
    n = w.shape[0]
    if prior_sd is None and n > 1:
        bad = _unbounded_players(w)
        if bad:
            raise ValueError(f"no maximum-likelihood ratings: versions {bad} are not connected both ways by wins "
                             "to the others (some never lost or never won); use a prior (prior_sd)")
    tau = 0.0 if prior_sd is None else 1.0 / prior_sd**2
    games = w + w.T
    r = torch.zeros(n, dtype=torch.float64)
    for _ in range(iters):
        p = torch.sigmoid(r[:, None] - r[None, :])  # p[i, j] = P(i beats j)
        grad = (w - games * p).sum(1) - tau * r
        pq = games * p * (1 - p)
        hess = torch.diag(pq.sum(1)) - pq + tau * torch.eye(n, dtype=torch.float64)  # minus the Hessian
        if tau == 0.0:
            hess = hess + 1.0 / n  # + 11^T/n: invertible, and unchanged on the mean-0 subspace the gradient lies in
        step = torch.linalg.solve(hess, grad)
        step = step * min(1.0, 4.0 / float(step.abs().max().clamp_min(1e-300)))  # no wild first steps
        r = r + step
        if float(step.abs().max()) < tol:
            break
    return r - r.mean()


def elo_ratings(comparisons: list[Comparison], n_versions: int, prior_sd: float | None = 2.0,
                anchor: int | None = 0, bootstraps: int = 0, confidence: float = 0.9,
                seed: int = 0) -> EloRatings:
    """Elo per version from all comparisons; percentile bootstrap intervals over resampled comparisons.

    Each bootstrap draws len(comparisons) comparisons with replacement and refits; the interval is the central
    `confidence` share of the refitted ratings (anchored the same way, so version 0's interval is [0, 0] when
    anchored at 0: the intervals are relative to the initial policy). Without a prior, a resample in which some
    version never loses has no MLE and raises; bootstrap with the prior.
    """
    if not comparisons:
        raise ValueError("elo_ratings needs at least one comparison")
    if anchor is not None and not 0 <= anchor < n_versions:
        raise ValueError(f"anchor {anchor} outside versions 0..{n_versions - 1}")

    def fit(cs: list[Comparison]) -> list[float]:
        r = bradley_terry_logits(_win_matrix(cs, n_versions), prior_sd)
        if anchor is not None:
            r = r - r[anchor]
        return (r * ELO_PER_LOGIT).tolist()

    elo = fit(comparisons)
    games = [0] * n_versions
    for c in comparisons:
        games[c.a] += 1
        games[c.b] += 1
    lo, hi = list(elo), list(elo)
    if bootstraps:
        rng = random.Random(seed)
        samples = [fit(rng.choices(comparisons, k=len(comparisons))) for _ in range(bootstraps)]
        tail = (1.0 - confidence) / 2
        for v in range(n_versions):
            col = sorted(s[v] for s in samples)
            lo[v] = _quantile(col, tail)
            hi[v] = _quantile(col, 1.0 - tail)
    return EloRatings(elo=elo, lo=lo, hi=hi, games=games, prior_sd=prior_sd, anchor=anchor,
                      confidence=confidence, bootstraps=bootstraps)


def _quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolation quantile of a sorted list (numpy's default)."""
    pos = q * (len(sorted_xs) - 1)
    i = int(math.floor(pos))
    j = min(i + 1, len(sorted_xs) - 1)
    return sorted_xs[i] + (pos - i) * (sorted_xs[j] - sorted_xs[i])
