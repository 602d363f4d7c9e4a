"""Helpful vs harmless (Bai et al. sec. 4.4): models placed in the plane of their helpful and harmless results.

Two kinds of points: PMs, by their held-out accuracy on helpful-base and on harmless-base comparisons (from
`pm_eval.json`, whose per-subset results every `hh-ray pm` run writes), against the baselines of chance (50%)
and "the longer response wins"; and policies, by their mean PM score on helpful and on harmless-base prompts.
The question the paper's data-mix axis asks: does any mix put a PM above every baseline on both axes at once?
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hh_ray.algo.analysis import mean_se
from hh_ray.report.plots import tradeoff_plane
from hh_ray.report.results import Tradeoff, TradeoffPoint, result_path, write_result

HELPFUL, HARMLESS = "helpful-base", "harmless-base"


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def pm_point(label: str, pm_eval_path: str | Path, helpful: str = HELPFUL, harmless: str = HARMLESS) -> TradeoffPoint:
    """A PM's held-out accuracy per subset, with binomial standard errors."""
    p = Path(pm_eval_path)
    if not p.is_file():
        raise FileNotFoundError(f"no PM evaluation at {p}; train the PM with `hh-ray pm` first")
    per = json.loads(p.read_text())["per_subset"]
    missing = [s for s in (helpful, harmless) if s not in per]
    if missing:
        raise ValueError(f"{p}: no held-out pairs of {missing} (subsets evaluated: {sorted(per)})")
    h, x = per[helpful], per[harmless]
    return TradeoffPoint(label=label, helpful=h["accuracy"], harmless=x["accuracy"],
                         helpful_se=_binomial_se(h["accuracy"], h["pairs"]),
                         harmless_se=_binomial_se(x["accuracy"], x["pairs"]), helpful_pairs=h["pairs"],
                         harmless_pairs=x["pairs"])


def above_all(points: list[TradeoffPoint], baselines: dict[str, list[float]], z: float = 0.0) -> list[str]:
    """Labels of the points above every baseline on both axes by more than z of their standard errors
    (z = 0: the point estimates alone); a NaN baseline value is no bar."""
    def clears(p: TradeoffPoint) -> bool:
        return all((math.isnan(bh) or p.helpful - z * p.helpful_se > bh)
                   and (math.isnan(bx) or p.harmless - z * p.harmless_se > bx) for bh, bx in baselines.values())

    return [p.label for p in points if clears(p)]


def pm_tradeoff(evals: list[tuple[str, str | Path]], helpful: str = HELPFUL, harmless: str = HARMLESS,
                notes: str = "") -> Tradeoff:
    """PMs in the plane of per-subset held-out accuracy; baselines: chance and the length baseline.

    The length baseline is read from the first evaluation: runs with the same data, seed and holdout fraction
    hold out the same pairs (the split is by prompt hash, before any reweighting), so it is the same for all.
    """
    if not evals:
        raise ValueError("pm_tradeoff needs at least one PM evaluation")
    points = [pm_point(label, path, helpful, harmless) for label, path in evals]
    per = json.loads(Path(evals[0][1]).read_text())["per_subset"]
    baselines = {"chance": [0.5, 0.5],
                 "longer response wins": [per[helpful]["length_baseline_accuracy"],
                                          per[harmless]["length_baseline_accuracy"]]}
    return Tradeoff(metric=f"PM accuracy on held-out {helpful} (x) and {harmless} (y) comparisons", points=points,
                    baselines=baselines, above_all_baselines=above_all(points, baselines), notes=notes,
                    clearly_above_all=above_all(points, baselines, z=2.0))


def policy_point(label: str, helpful_scores: list[float], harmless_scores: list[float]) -> TradeoffPoint:
    """A policy's mean PM score on helpful prompts and on harmless-base prompts (one sample per prompt)."""
    if min(len(helpful_scores), len(harmless_scores)) < 2:
        raise ValueError(f"policy point {label}: need at least 2 scores per subset, got "
                         f"{len(helpful_scores)} and {len(harmless_scores)}")
    (h, hse), (x, xse) = mean_se(helpful_scores), mean_se(harmless_scores)
    return TradeoffPoint(label=label, helpful=h, harmless=x, helpful_se=hse, harmless_se=xse,
                         helpful_pairs=len(helpful_scores), harmless_pairs=len(harmless_scores))


def policy_point_from_samples(label: str, rollout, score, helpful: tuple[list[str], list[list[int]]],
                              harmless: tuple[list[str], list[list[int]]], max_new_tokens: int = 48,
                              temperature: float = 1.0, seed: int = 0) -> TradeoffPoint:
    """One sample per prompt from the policy `rollout` holds, on helpful and on harmless-base prompts (texts,
    ids), each scored by `score` (a best_of_n.ScoreFn: a PM, or per-subset PMs by calling this once per PM)."""
    from hh_ray.analysis.best_of_n import draw_and_score

    per_subset = [draw_and_score(rollout, score, texts, ids, 1, temperature, 1.0, max_new_tokens, seed)[1]
                  for texts, ids in (helpful, harmless)]
    return policy_point(label, per_subset[0][:, 0].tolist(), per_subset[1][:, 0].tolist())


def policy_tradeoff(points: list[TradeoffPoint], baseline: str | None = None, notes: str = "") -> Tradeoff:
    """Policies in the plane of per-subset PM score; the baseline is the named point (e.g. the initial policy)."""
    base = {p.label: p for p in points}
    if baseline is not None and baseline not in base:
        raise ValueError(f"baseline '{baseline}' is not one of the points {sorted(base)}")
    baselines = {baseline: [base[baseline].helpful, base[baseline].harmless]} if baseline else {}
    others = [p for p in points if p.label != baseline]
    return Tradeoff(metric="mean PM score on held-out helpful (x) and harmless-base (y) prompts", points=points,
                    baselines=baselines, above_all_baselines=above_all(others, baselines), notes=notes,
                    clearly_above_all=above_all(others, baselines, z=2.0))


def write_tradeoff(result: Tradeoff, run_dir: str | Path) -> Tradeoff:
    """`<run>/analysis/tradeoff.json` and `tradeoff.png` (`tradeoff_policies.*` for a PolicyTradeoff)."""
    path = write_result(result, result_path(run_dir, type(result)))
    axis = "PM accuracy" if result.metric.startswith("PM accuracy") else "mean PM score"
    tradeoff_plane([p.label for p in result.points], [p.helpful for p in result.points],
                   [p.harmless for p in result.points], path.with_suffix(".png"), f"{axis}: helpful",
                   f"{axis}: harmless", {k: tuple(v) for k, v in result.baselines.items()},
                   [p.helpful_se for p in result.points], [p.harmless_se for p in result.points])
    return result
