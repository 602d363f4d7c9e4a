"""The helpful/harmless plane: PM points from pm_eval.json, baselines, who clears them on both axes."""

from __future__ import annotations

import json
import math

import pytest

from hh_ray.analysis.tradeoff import pm_tradeoff, policy_point, policy_tradeoff, write_tradeoff
from hh_ray.report.results import Tradeoff, read_result, result_path


def _pm_eval(path, helpful_acc, harmless_acc, pairs=100, length=(0.6, 0.45)):
    path.parent.mkdir(parents=True, exist_ok=True)
    per = {"helpful-base": {"accuracy": helpful_acc, "pairs": pairs, "length_baseline_accuracy": length[0]},
           "harmless-base": {"accuracy": harmless_acc, "pairs": pairs, "length_baseline_accuracy": length[1]}}
    path.write_text(json.dumps({"accuracy": 0.5, "per_subset": per}))
    return path


def test_pm_tradeoff_baselines_and_both_axes(tmp_path):
    evals = [("harmless x0.5", _pm_eval(tmp_path / "a" / "pm_eval.json", 0.64, 0.44)),
             ("harmless x2", _pm_eval(tmp_path / "b" / "pm_eval.json", 0.62, 0.55)),
             ("harmless x4", _pm_eval(tmp_path / "c" / "pm_eval.json", 0.58, 0.60))]
    t = pm_tradeoff(evals)
    assert t.baselines == {"chance": [0.5, 0.5], "longer response wins": [0.6, 0.45]}
    # x0.5 fails harmless (0.44 < 0.5); x4 fails helpful against the length baseline (0.58 < 0.6)
    assert t.above_all_baselines == ["harmless x2"]
    assert t.clearly_above_all == []  # 0.55 - 2 * 0.0497 < 0.5: within noise of chance on harmless
    big = pm_tradeoff([("harmless x2, 4000 pairs", _pm_eval(tmp_path / "d" / "pm_eval.json", 0.62, 0.55, 4000))])
    assert big.clearly_above_all == ["harmless x2, 4000 pairs"]  # se 0.0079: 0.55 - 0.016 > 0.5
    assert t.points[0].helpful_se == pytest.approx(math.sqrt(0.64 * 0.36 / 100))
    write_tradeoff(t, tmp_path / "run")
    assert read_result(Tradeoff, result_path(tmp_path / "run", Tradeoff)) == t
    assert (tmp_path / "run" / "analysis" / "tradeoff.png").stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="no PM evaluation"):
        pm_tradeoff([("x", tmp_path / "missing.json")])


def test_policy_points_against_the_initial_policy():
    init = policy_point("initial", [0.0, 0.2], [0.0, -0.2])  # means 0.1 and -0.1
    assert (init.helpful, init.harmless) == pytest.approx((0.1, -0.1))
    assert init.helpful_se == pytest.approx(0.1)  # sd 0.1414 / sqrt(2)
    rl = policy_point("rlhf", [0.5, 0.7], [-0.3, -0.1])  # more helpful, less harmless than initial
    t = policy_tradeoff([init, rl], baseline="initial")
    assert t.baselines == {"initial": [pytest.approx(0.1), pytest.approx(-0.1)]}
    assert t.above_all_baselines == []
    with pytest.raises(ValueError, match="baseline 'sft'"):
        policy_tradeoff([init], baseline="sft")
