"""Forward micro batches by token budget, against hand-worked groupings."""

from __future__ import annotations

from hh_ray.algo.batching import batch_count, padded_tokens, token_budget_batches


def test_groups_stay_within_the_budget_longest_first():
    lengths = [100, 400, 250, 390, 120]
    # sorted longest first: 400 (i1), 390 (i3), 250 (i2), 120 (i4), 100 (i0)
    # budget 800: [400, 390] pads to 2 x 400 = 800 (fits); + 250 would be 3 x 400 = 1200 -> new group
    # [250, 120, 100] pads to 3 x 250 = 750 <= 800
    assert token_budget_batches(lengths, 800) == [[1, 3], [2, 4, 0]]
    for group in token_budget_batches(lengths, 800):
        assert padded_tokens([lengths[i] for i in group]) <= 800
    assert batch_count(lengths, 800) == 2


def test_long_sequence_goes_alone_and_zero_budget_means_one_forward():
    assert token_budget_batches([50, 2000, 60], 1000) == [[1], [2, 0]]
    assert token_budget_batches([50, 2000, 60], 0) == [[1, 2, 0]]


def test_min_batches_splits_the_widest_then_pads_with_empty_groups():
    # ZeRO-3 ranks must run equal numbers of forwards: a rank needing 1 is asked for 3
    assert token_budget_batches([10, 10, 10, 10], 1000, min_batches=3) == [[0], [1], [2, 3]]
    assert token_budget_batches([10], 1000, min_batches=3) == [[0], [], []]
    assert token_budget_batches([], 1000, min_batches=2) == [[], []]
    every = sorted(i for g in token_budget_batches([5, 9, 7, 3, 8], 16, min_batches=4) for i in g)
    assert every == [0, 1, 2, 3, 4]  # each index exactly once
