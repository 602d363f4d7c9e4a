"""What the admin page shows, as pure functions over stored comparisons: counts, strength shares, agreement."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from .config import STRENGTHS
from .store import ComparisonRecord


@dataclass
class Progress:
    total: int = 0
    by_campaign: Counter = field(default_factory=Counter)
    by_mode: Counter = field(default_factory=Counter)
    by_source_pair: Counter = field(default_factory=Counter)  # "v0 vs v1" (sources sorted, so A/B order does not split)
    by_labeler: Counter = field(default_factory=Counter)
    strength_share: dict[int, float] = field(default_factory=dict)
    repeated_tasks: int = 0  # distinct (context, response pair) labeled more than once
    agreement_pairs: int = 0
    agreement: float | None = None  # share of pairs of judgements on a repeated task that pick the same response
    median_decide_seconds: float | None = None

    def as_dict(self) -> dict:
        return {"total": self.total, "by_campaign": dict(self.by_campaign), "by_mode": dict(self.by_mode),
                "by_source_pair": dict(self.by_source_pair), "by_labeler": dict(self.by_labeler),
                "strength_share": {str(k): v for k, v in self.strength_share.items()},
                "repeated_tasks": self.repeated_tasks, "agreement_pairs": self.agreement_pairs,
                "agreement": self.agreement, "median_decide_seconds": self.median_decide_seconds}


def picked_text(r: ComparisonRecord) -> str:
    """The response the labeler clicked (the more harmful one in red-team mode)."""
    return r.response_a if r.choice == "A" else r.response_b


def agreement(records: list[ComparisonRecord]) -> tuple[int, int, float | None]:
    """(repeated tasks, pairs of judgements on them, share of pairs that picked the same response).

    A task repeats when the same context was shown with the same two responses (in either order) more than once,
    e.g. two labelers who opened with the same turn and got the same (seeded) samples.
    """
    groups: dict[tuple, list[str]] = {}
    for r in records:
        groups.setdefault((r.context, frozenset((r.response_a, r.response_b))), []).append(picked_text(r))
    repeated = [g for g in groups.values() if len(g) > 1]
    pairs = [(a, b) for g in repeated for a, b in itertools.combinations(g, 2)]
    if not pairs:
        return len(repeated), 0, None
    return len(repeated), len(pairs), sum(a == b for a, b in pairs) / len(pairs)


def summarize(records: list[ComparisonRecord]) -> Progress:
    p = Progress(total=len(records))
    for r in records:
        p.by_campaign[r.campaign] += 1
        p.by_mode[r.mode] += 1
        p.by_source_pair[" vs ".join(sorted((f"{r.source_a}@{r.version_a}", f"{r.source_b}@{r.version_b}")))] += 1
        p.by_labeler[r.labeler] += 1
    strengths = Counter(r.strength for r in records)
    p.strength_share = {k: (strengths[k] / len(records) if records else 0.0) for k in STRENGTHS}
    p.repeated_tasks, p.agreement_pairs, p.agreement = agreement(records)
    times = sorted(r.decide_seconds for r in records)
    if times:
        mid = len(times) // 2
        p.median_decide_seconds = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    return p


def progress_png(records: list[ComparisonRecord]) -> bytes:
    """Cumulative comparisons over time, one line per campaign (matplotlib, Agg)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    by_campaign: dict[str, list] = {}
    for r in sorted(records, key=lambda r: r.decided_at):
        by_campaign.setdefault(r.campaign, []).append(r.decided_at)
    for name, times in sorted(by_campaign.items()):
        ax.step(times, range(1, len(times) + 1), where="post", label=name)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("comparisons")
    ax.set_title("labeling progress")
    if by_campaign:
        ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
