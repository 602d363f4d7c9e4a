"""The "Online rounds" results of `hh-ray online` (written by the driver) and their report.md section."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from hh_ray.files import write_text_atomic

ONLINE_FILE = "online.json"


@dataclass
class RoundResult:
    """One round: what was compared, how much, and what the retrained PM and PPO made of it."""

    round: int
    policy_version: int  # the policy deployed in this round's campaign (k); PPO made version k + 1
    opponent_version: int
    comparisons: dict[str, int] = field(default_factory=dict)  # mode -> comparisons collected this round
    collection_finished: bool = True  # False: the deadline stopped collection before N
    collection_s: float = 0.0
    pm_train_pairs: int = 0
    pm_static_accuracy: float = float("nan")  # on the static HH held-out pairs
    pm_next_accuracy: float = float("nan")  # on the next round's fresh comparisons (distribution shift)
    pm_next_pairs: int = 0
    ppo_score_before: float = float("nan")  # held-out PM score (this round's PM), before / after PPO
    ppo_score_after: float = float("nan")
    samples: list[dict] = field(default_factory=list)  # a few held-out samples of policy k + 1


@dataclass
class VersionRating:
    version: int
    elo: float
    lo: float
    hi: float
    games: int


@dataclass
class OnlineSummary:
    rounds: list[RoundResult] = field(default_factory=list)
    pm_init: str = "scratch"
    opponent: str = "best"
    online_weight: float = 1.0
    elo_all: list[VersionRating] = field(default_factory=list)  # every comparison between versions
    elo_head_to_head: list[VersionRating] = field(default_factory=list)  # judge: every version vs version 0
    confidence: float = 0.9
    bootstraps: int = 0


def ratings(elo) -> list[VersionRating]:
    """hh_ray.algo.elo.EloRatings as rows."""
    return [VersionRating(v, e, a, b, g) for v, (e, a, b, g) in enumerate(zip(elo.elo, elo.lo, elo.hi, elo.games))]


def write_summary(summary: OnlineSummary, run_dir: str | Path) -> Path:
    p = Path(run_dir) / ONLINE_FILE
    return write_text_atomic(p, json.dumps(dataclasses.asdict(summary), indent=1))


def read_summary(run_dir: str | Path) -> OnlineSummary | None:
    p = Path(run_dir) / ONLINE_FILE
    if not p.is_file():
        return None
    raw = json.loads(p.read_text())
    raw["rounds"] = [RoundResult(**r) for r in raw["rounds"]]
    raw["elo_all"] = [VersionRating(**r) for r in raw["elo_all"]]
    raw["elo_head_to_head"] = [VersionRating(**r) for r in raw["elo_head_to_head"]]
    return OnlineSummary(**raw)


def _elo_table(rows: list[VersionRating]) -> list[str]:
    return (["| version | Elo | interval | games |", "|---|---|---|---|"]
            + [f"| {r.version} | {r.elo:+.0f} | [{r.lo:+.0f}, {r.hi:+.0f}] | {r.games} |" for r in rows])


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def online_section(run_dir: str | Path) -> list[str]:
    """Markdown lines of the "Online rounds" section, or none when the run has no online.json."""
    s = read_summary(run_dir)
    if s is None:
        return []
    against = "the best earlier version" if s.opponent == "best" else "itself"
    init = "from the SFT backbone" if s.pm_init == "scratch" else "warm-started from the previous PM"
    lines = ["## Online rounds", "",
             f"Each round deploys policy k against {against} in a labeling campaign, retrains the PM on static HH "
             f"plus every online comparison so far (online weight {s.online_weight:g}, {init}), then runs PPO from "
             "policy k against it.", "",
             "| round | policy vs | comparisons | PM train pairs | PM acc. static held-out | PM acc. next round's "
             "comparisons | PPO PM score before -> after |", "|---|---|---|---|---|---|---|"]
    for r in s.rounds:
        cmp = ", ".join(f"{m} {n}" for m, n in sorted(r.comparisons.items())) + (
            f" in {r.collection_s:.0f} s" if r.collection_finished else f" (deadline, {r.collection_s:.0f} s)")
        nxt = f"{r.pm_next_accuracy:.3f} ({r.pm_next_pairs})" if r.pm_next_pairs else "-"
        lines.append(f"| {r.round} | v{r.policy_version} vs v{r.opponent_version} | {cmp} | {r.pm_train_pairs} | "
                     f"{r.pm_static_accuracy:.3f} | {nxt} | {r.ppo_score_before:+.3f} -> {r.ppo_score_after:+.3f} |")
    lines += ["", "The paper found PMs less accurate on comparisons from the newest policy than on the distribution "
                  "they were trained on; the two accuracy columns put the two side by side (for the last round, "
                  "'next' is the final head-to-head's comparisons).", ""]
    if s.elo_all:
        lines += ["Elo of every version from all comparisons between versions: the \"Elo by policy version\" "
                  "section.", ""]
    if s.elo_head_to_head:
        lines += ["Judge head-to-head of every version against version 0 on held-out prompts:", ""]
        lines += _elo_table(s.elo_head_to_head) + ["", "![Elo by round](online_elo.png)", ""]
    for r in s.rounds:
        if r.samples:
            lines += [f"Samples of policy v{r.policy_version + 1} (held-out prompts):", "",
                      "| prompt (end) | response | PM score |", "|---|---|---|"]
            lines += [f"| {_short(x['prompt'][-120:])} | {_short(x['response'])} | {x['pm_score']:+.2f} |"
                      for x in r.samples]
            lines.append("")
    return lines
