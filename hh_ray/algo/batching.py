"""Forward-only micro batches cut by a token budget: pure functions of sequence lengths.

A value or logprob pass over a whole shard (hundreds of ~1.5k-token sequences) in one forward needs tens of GB
of activations on a 7B model. Cutting it into micro batches whose padded size (rows x longest row) stays within
a budget bounds that peak, and sorting by length first keeps the padding small.
"""

from __future__ import annotations


def padded_tokens(lengths: list[int]) -> int:
    """Tokens one right-padded micro batch occupies: rows x longest row."""
    return len(lengths) * max(lengths, default=0)


def token_budget_batches(lengths: list[int], budget: int, min_batches: int = 1) -> list[list[int]]:
    """Indices into `lengths`, grouped so each group's padded size is at most `budget` (a sequence longer than
    the budget goes alone). Longest first, so neighbours have similar lengths. `budget` 0 = one group.

    `min_batches`: split the largest groups further until there are at least this many; groups stay non-empty
    while sequences last, and are empty beyond (ZeRO-3 ranks must all run the same number of forwards, so a rank
    with fewer sequences than its peers runs placeholder forwards for those).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups and (not budget or padded_tokens([lengths[j] for j in groups[-1]] + [lengths[i]]) <= budget):
            groups[-1].append(i)
        else:
            groups.append([i])
    while len(groups) < min_batches:
        widest = max(range(len(groups)), key=lambda g: len(groups[g]), default=None)
        if widest is None or len(groups[widest]) < 2:
            groups.append([])
            continue
        g = groups.pop(widest)
        half = len(g) // 2
        groups[widest:widest] = [g[:half], g[half:]]
    return groups


def batch_count(lengths: list[int], budget: int) -> int:
    """How many forwards `token_budget_batches` needs for these lengths (what a group equalizes across ranks)."""
    return len(token_budget_batches(lengths, budget))
