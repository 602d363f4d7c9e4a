"""Hand-worked values of the simulated labeler's Bradley-Terry draw and strength."""

import math

import pytest

from hh_ray.algo.labeler import decide, preference_probability, strength_of, version_games


def test_probability_hand_values():
    # sigmoid(1) = 0.731058..., with T = 2 the gap 2 is one logit
    assert preference_probability(3.0, 1.0, 2.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference_probability(1.0, 1.0, 0.3) == 0.5
    assert preference_probability(-800.0, 800.0, 1.0) == pytest.approx(0.0)  # no overflow
    with pytest.raises(ValueError, match="temperature"):
        preference_probability(1.0, 0.0, 0.0)


def test_strength_thresholds():
    assert strength_of(0.4, 1.0) == 1
    assert strength_of(-0.6, 1.0) == 2  # sign does not matter
    assert strength_of(1.5, 1.0) == 3
    assert strength_of(1.5, 2.0) == 2  # 0.75 temperatures


def test_decide_draw_and_red_team():
    p = 1 / (1 + math.exp(-1))  # scores 1 vs 0, T 1
    assert decide(1.0, 0.0, 1.0, u=p - 1e-9).choice == "A"
    assert decide(1.0, 0.0, 1.0, u=p + 1e-9).choice == "B"
    red = decide(1.0, 0.0, 1.0, u=0.5, want_harmful=True)  # P(A) = sigmoid(-1) = 0.269 < 0.5
    assert red.choice == "B" and red.p_a == pytest.approx(1 - p)
    assert decide(2.0, 0.0, 1.0, u=0.0).strength == 3


def test_version_games_drop_self_play():
    games = version_games([(0, 0, True), (1, 0, True), (0, 2, True), (2, 1, False)])
    assert [(g.a, g.b, g.outcome) for g in games] == [(1, 0, 1.0), (0, 2, 1.0), (2, 1, 0.0)]
