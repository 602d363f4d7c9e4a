"""Bradley-Terry Elo against closed forms: two players, a cycle, an unbeaten player under the prior."""

from __future__ import annotations

import math

import pytest
import torch

from hh_ray.algo.elo import ELO_PER_LOGIT, Comparison, bradley_terry_logits, elo_ratings


def games(a: int, b: int, a_wins: int, b_wins: int) -> list[Comparison]:
    return [Comparison(a, b, 1.0)] * a_wins + [Comparison(a, b, 0.0)] * b_wins


def test_two_players_closed_form_without_prior():
    r = elo_ratings(games(0, 1, 3, 1), 2, prior_sd=None)
    # ML: sigmoid(r0 - r1) = 3/4 -> r0 - r1 = ln 3 logits = 400 log10(3) Elo; anchored at version 0 = 0
    assert r.elo == pytest.approx([0.0, -400 * math.log10(3)], abs=1e-6)
    assert ELO_PER_LOGIT == pytest.approx(400 / math.log(10))
    centred = elo_ratings(games(0, 1, 3, 1), 2, prior_sd=None, anchor=None)
    assert sum(centred.elo) == pytest.approx(0.0, abs=1e-9)
    assert centred.elo[0] - centred.elo[1] == pytest.approx(400 * math.log10(3))
    ties = elo_ratings([Comparison(0, 1, 0.5)] * 4 + games(0, 1, 1, 0), 2, prior_sd=None)  # 3 wins to 2
    assert ties.elo[0] - ties.elo[1] == pytest.approx(ELO_PER_LOGIT * math.log(3 / 2))


def test_cycle_gives_equal_ratings():
    cs = games(0, 1, 2, 0) + games(1, 2, 2, 0) + games(2, 0, 2, 0)
    for prior in (None, 2.0):
        assert elo_ratings(cs, 3, prior_sd=prior).elo == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_unbeaten_player_finite_only_with_the_prior():
    with pytest.raises(ValueError, match=r"versions \[0\]|versions \[1\]"):
        elo_ratings(games(0, 1, 5, 0), 2, prior_sd=None)
    r = bradley_terry_logits(torch.tensor([[0.0, 5.0], [0.0, 0.0]], dtype=torch.float64), prior_sd=2.0)
    x = float(r[0])  # by symmetry r = (x, -x); stationarity: 5 sigmoid(-2x) = x / sd^2
    assert float(r[1]) == pytest.approx(-x)
    assert 5 / (1 + math.exp(2 * x)) == pytest.approx(x / 4, abs=1e-9)
    assert 0 < x < 5


def test_prior_is_weak_against_many_games():
    r = elo_ratings(games(0, 1, 300, 100), 2, prior_sd=2.0)
    assert r.elo[1] == pytest.approx(-400 * math.log10(3), rel=0.01)


def test_bootstrap_intervals():
    cs = games(0, 1, 6, 4) + games(1, 2, 30, 10) + games(0, 2, 8, 2)
    r = elo_ratings(cs, 3, bootstraps=200, confidence=0.9, seed=1)
    assert r.lo[0] == r.hi[0] == 0.0  # anchored: intervals are relative to version 0
    for v in (1, 2):
        assert r.lo[v] <= r.elo[v] <= r.hi[v] and r.hi[v] - r.lo[v] > 10
    assert r == elo_ratings(cs, 3, bootstraps=200, confidence=0.9, seed=1)  # seeded: reproducible
    assert r.games == [20, 50, 50]
    more = elo_ratings(cs * 10, 3, bootstraps=200, confidence=0.9, seed=1)
    assert more.hi[2] - more.lo[2] < r.hi[2] - r.lo[2]  # ten times the games: a narrower interval


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="versions must differ"):
        elo_ratings([Comparison(0, 0, 1.0)], 2)
    with pytest.raises(ValueError, match="lie in 0..1"):
        elo_ratings([Comparison(0, 2, 1.0)], 2)
    with pytest.raises(ValueError, match="at least one comparison"):
        elo_ratings([], 2)
