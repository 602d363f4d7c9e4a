"""Pairwise PM loss and calibration against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from hh_ray.algo.pm import expected_calibration_error, pairwise_loss, pm_metrics


def test_pairwise_loss_by_hand():
    loss, correct = pairwise_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert loss.tolist() == pytest.approx([math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))], abs=1e-6)
    assert correct.tolist() == [1.0, 0.0]
    loss, _ = pairwise_loss(torch.tensor([2.0]), torch.tensor([1.0]), margin=1.0, center_coef=0.5)
    assert float(loss) == pytest.approx(math.log(2) + 0.5 * 9.0, abs=1e-6)


def test_ece_by_hand():
    # three pairs at p = 0.75 and one at 0.25: the [0.7, 0.8) bin holds three right calls (p sides) and one
    # wrong one (the 1 - p side of the last pair): accuracy 0.75 at confidence 0.75, mirrored at 0.25 -> ECE 0
    ece, table = expected_calibration_error(torch.tensor([0.75, 0.75, 0.75, 0.25]))
    assert ece == pytest.approx(0.0, abs=1e-9)
    # p = 0.9 always, and the human choice is always the "chosen" one (by definition): the p side has
    # accuracy 1 at confidence 0.9, the 1-p side accuracy 0 at confidence 0.1 -> ECE = 0.1
    ece, table = expected_calibration_error(torch.tensor([0.9, 0.9]))
    assert ece == pytest.approx(0.1, abs=1e-6)
    assert sum(b["count"] for b in table) == 4


def test_pm_metrics_per_subset_and_length_baseline():
    m = pm_metrics(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([0.0, 1.0, 2.0]), ["a", "a", "b"],
                   [10, 5, 7], [3, 9, 7])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["per_subset"]["a"] == {"accuracy": 0.5, "pairs": 2, "length_baseline_accuracy": 0.5}
    assert m["per_subset"]["b"]["accuracy"] == 1.0
    assert m["length_baseline_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
