"""Verdicts: for each analysis, the direction Bai et al. report, what this run measured (with its standard
error) and whether the two agree. A rule decides each verdict from the stored figures, so a report can be
trusted not to read an effect into noise: "holds" means beyond 2 standard errors (or past a stated threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hh_ray.algo.analysis import SqrtKLLaw, mean_se
from hh_ray.report.results import OOD, AlignmentTax, BestOfN, InitialPolicies, Tradeoff

Z = 2.0  # standard errors an effect must clear


@dataclass(frozen=True)
class Verdict:
    section: str  # the report section it is written under, e.g. "## PPO"
    paper: str  # the direction the paper reports
    measured: str  # this run's figure with its uncertainty
    holds: bool | None  # None: the run cannot tell (missing data, or no direction to test)
    headline: bool = False  # one of the five checks (the summary counts them)


def _sure(d: float, se: float) -> str:
    return f"{d:+.3f} ± {se:.3f} ({d / se:+.1f} s.e.)" if se > 0 else f"{d:+.3f} (no spread)"


def _diff_se(a_se: float, b_se: float) -> float:
    """s.e. of a difference of two estimates treated as independent (conservative when they share samples)."""
    return math.hypot(a_se, b_se)


def ppo_raises_test_pm(before: list[dict], after: list[dict]) -> Verdict | None:
    """The held-out PM's score of the same prompts' samples, after PPO minus before, paired by prompt."""
    key = "test_pm_score"
    if not before or not all(key in s for s in before + after):
        return None
    m, se = mean_se([a[key] - b[key] for b, a in zip(before, after)])
    return Verdict("## PPO", "RLHF raises the score that a PM trained on other comparisons gives",
                   f"test-PM change {_sure(m, se)} on {len(before)} held-out prompts", m > Z * se, headline=True)


def gap_grows_with_kl(kls: list[float], gaps: list[float], gap_ses: list[float | None]) -> Verdict | None:
    """Train-PM minus test-PM score at the last held-out evaluation against the first (independent samples)."""
    if len(gaps) < 2 or gap_ses[0] is None or gap_ses[-1] is None:
        return None
    d, se = gaps[-1] - gaps[0], _diff_se(gap_ses[0], gap_ses[-1])
    return Verdict("### Robustness", "the train PM's lead over a test PM grows as the policy moves away (KL)",
                   f"gap {gaps[0]:+.3f} at KL {kls[0]:.2f} -> {gaps[-1]:+.3f} at KL {kls[-1]:.2f}: {_sure(d, se)}",
                   d > Z * se, headline=True)


def sqrt_kl_early_fit(law: SqrtKLLaw) -> Verdict:
    f = law.early
    measured = (f"early fit R^2 {f.r2:.3f} over {f.n} points, slope {f.slope:+.3f}" if f else
                f"too few early points (whole run R^2 {law.whole.r2:.3f})")
    return Verdict("## The sqrt(KL) law", "early in training the PM score grows linearly in sqrt(KL) (R^2 >= 0.8)",
                   measured, (f.r2 >= 0.8 and f.slope > 0) if f else None, headline=True)


def bon_raises_test_pm(bon: BestOfN) -> Verdict | None:
    if not bon.test_pm or not bon.test_pm_se or len(bon.ns) < 2:
        return None
    d, se = bon.test_pm[-1] - bon.test_pm[0], _diff_se(bon.test_pm_se[0], bon.test_pm_se[-1])
    return Verdict("## Best-of-N", "best-of-N by the train PM raises the test PM's score as N grows",
                   f"test PM N={bon.ns[0]} -> N={bon.ns[-1]}: {_sure(d, se)}", d > Z * se, headline=True)


def ood_detects_harm(ood: OOD) -> Verdict:
    where = f" at layer {ood.layer}" + (" (chosen on a validation split)" if ood.layers else "")
    return Verdict("## OOD detection", "a Gaussian on a model's activations flags harmful requests (AUROC >= 0.85)",
                   f"AUROC {ood.auroc:.3f}" + (f" ± {ood.auroc_se:.3f}" if ood.auroc_se == ood.auroc_se else "")
                   + where, ood.auroc >= 0.85, headline=True)


def pm_beats_baselines(pm: dict) -> Verdict:
    """Held-out accuracy against max(chance, the longer-response baseline), binomial standard error."""
    acc, n, length = pm["accuracy"], pm["pairs"], pm["length_baseline_accuracy"]
    se = math.sqrt(acc * (1 - acc) / max(n, 1))
    d = acc - max(0.5, length)
    return Verdict("## Preference model", "PMs trained on human comparisons beat chance and response length",
                   f"accuracy {acc:.3f} ± {se:.3f} on {n} pairs vs {max(0.5, length):.3f} (chance or length, the "
                   f"higher), ECE {pm['ece']:.3f}", d > Z * se)


def helpful_harmless_tension(trade: Tradeoff) -> Verdict | None:
    """The harmless-only PM against the helpful-only PM on each axis (labels from driver.analyses)."""
    only = {p.label: p for p in trade.points if p.label in ("harmless only",) or p.label.endswith("(helpful only)")}
    harmless = only.get("harmless only")
    helpful = next((p for lbl, p in only.items() if lbl.endswith("(helpful only)")), None)
    if not harmless or not helpful:
        return None
    dh = harmless.harmless - helpful.harmless
    dh_se = _diff_se(harmless.harmless_se, helpful.harmless_se)
    dp = helpful.helpful - harmless.helpful
    dp_se = _diff_se(harmless.helpful_se, helpful.helpful_se)
    return Verdict("## Helpful vs harmless: PMs", "a PM trained on harmlessness data is the more accurate on "
                   "harmless-base and the less accurate on the helpful subsets than one trained on helpful data",
                   f"harmless-only minus helpful-only on harmless-base {_sure(dh, dh_se)}; helpful-only minus "
                   f"harmless-only on helpful {_sure(dp, dp_se)}", dh > Z * dh_se and dp > Z * dp_se)


def alignment_tax(tax: AlignmentTax) -> Verdict | None:
    """Mean change over tasks; the paper finds a tax for small models (a bonus only at 13B and 52B)."""
    if not tax.tasks:
        return None
    d = sum(t.after - t.before for t in tax.tasks) / len(tax.tasks)
    se = math.sqrt(sum(t.before_se ** 2 + t.after_se ** 2 for t in tax.tasks)) / len(tax.tasks)
    return Verdict("## Alignment tax", "small models lose zero-shot accuracy to RLHF (an alignment tax)",
                   f"mean change over {len(tax.tasks)} tasks {_sure(d, se)}", d < -Z * se)


def initial_policy(init: InitialPolicies) -> Verdict | None:
    """The run's initial policy (context distillation) against SFT: the paper starts RLHF from the former."""
    if len(init.labels) < 2:
        return None
    d, se = -init.vs_first[1], init.vs_first_se[1]
    judge = "test" if init.test_pm else "train"
    return Verdict("## Initial policy", f"RLHF starts from {init.labels[0]}, which scores at least as well as "
                   f"{init.labels[1]}",
                   f"{judge}-PM score, the run's minus {init.labels[1]}: {_sure(d, se)}", d > -Z * se)


def summary_md(verdicts: list[Verdict]) -> list[str]:
    """The table at the top of the report: every verdict, and how many of the headline checks hold."""
    if not verdicts:
        return []
    mark = {True: "agrees", False: "does not agree", None: "cannot tell"}
    heads = [v for v in verdicts if v.headline]
    lines = ["## Verdicts against the paper", "",
             f"{sum(v.holds is True for v in heads)} of {len(heads)} headline checks hold (a check holds beyond "
             f"{Z:g} standard errors or past its stated threshold).", "",
             "| section | the paper reports | this run | verdict |", "|---|---|---|---|"]
    lines += [f"| {v.section.lstrip('# ')}{' *' if v.headline else ''} | {v.paper} | {v.measured} | "
              f"{mark[v.holds]} |" for v in verdicts]
    return lines + ["", "\\* a headline check.", ""]


def insert_under_sections(lines: list[str], verdicts: list[Verdict]) -> list[str]:
    """Each verdict as one sentence at the end of its section (before the next heading of the same or a higher
    level); a verdict whose section is absent stays in the summary table only."""
    out = list(lines)
    for v in verdicts:
        starts = [i for i, line in enumerate(out) if line.startswith(v.section)]
        if not starts:
            continue
        level = len(v.section) - len(v.section.lstrip("#"))
        end = next((j for j in range(starts[0] + 1, len(out)) if out[j].startswith("#")
                    and len(out[j]) - len(out[j].lstrip("#")) <= level), len(out))
        word = {True: "agrees with", False: "does not agree with", None: "cannot test"}[v.holds]
        out[end:end] = [f"**Verdict:** this run {word} the paper's direction ({v.paper}): {v.measured}.", ""]
    return out
