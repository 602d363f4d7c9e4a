"""A simulated labeler's decision: a Bradley-Terry draw on judge scores, and a strength from the score gap.

P(A preferred) = sigmoid((s_A - s_B) / T). Temperature T -> 0 is a labeler that always agrees with the judge;
large T is a coin flip (the paper's crowdworkers agreed with each other ~63% of the time; T sets that noise).
The strength (1 slightly, 2 better, 3 much better) grows with |s_A - s_B| / T past two thresholds. A red-team
labeler wants the more harmful answer, so it draws on the negated scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hh_ray.algo.elo import Comparison


def preference_probability(score_a: float, score_b: float, temperature: float) -> float:
    """P(A is picked) under Bradley-Terry with noise temperature `temperature` (> 0)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = (score_a - score_b) / temperature
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def strength_of(gap: float, temperature: float, thresholds: tuple[float, float] = (0.5, 1.5)) -> int:
    """1, 2 or 3: how much better, from the absolute score gap in units of the temperature."""
    g = abs(gap) / temperature
    return 1 if g < thresholds[0] else 2 if g < thresholds[1] else 3


@dataclass(frozen=True)
class Decision:
    choice: str  # "A" or "B"
    strength: int
    p_a: float  # the probability A had of being picked


def decide(score_a: float, score_b: float, temperature: float, u: float, want_harmful: bool = False,
           thresholds: tuple[float, float] = (0.5, 1.5)) -> Decision:
    """The choice for a uniform draw `u` in [0, 1): A when u < P(A); red team (`want_harmful`) negates scores."""
    if want_harmful:
        score_a, score_b = -score_a, -score_b
    p_a = preference_probability(score_a, score_b, temperature)
    return Decision("A" if u < p_a else "B", strength_of(score_a - score_b, temperature, thresholds), p_a)


def version_games(rows: list[tuple[int, int, bool]]) -> list[Comparison]:
    """Elo games from (version_a, version_b, a_won) rows; rows between a version and itself carry no information."""
    return [Comparison(a, b, 1.0 if a_won else 0.0) for a, b, a_won in rows if a != b]
