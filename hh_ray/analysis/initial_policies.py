"""Which initial policy (Bai et al. sec. 2.3 and 3): the paper starts RLHF from a context-distilled model (the
HHH prompt distilled into the weights) rather than from supervised fine-tuning on the chosen responses. Both
candidates, and the model they start from, sample one response per held-out prompt with the same seeds; both
PMs score every sample, so each candidate's difference from the run's own initial policy is paired by prompt.
"""

from __future__ import annotations

from collections.abc import Callable

from hh_ray.algo.analysis import mean_se, paired_gap
from hh_ray.analysis.best_of_n import ScoreFn
from hh_ray.report.plots import before_after_bars
from hh_ray.report.results import InitialPolicies, result_path, write_result

Draw = Callable[[str], list[tuple[list[int], str]]]
"""policy folder -> one (response ids, text) per prompt, prompt order, seeded by position."""


def compare_initial_policies(candidates: list[tuple[str, str]], prompt_texts: list[str], draw: Draw,
                             train_score: ScoreFn, test_score: ScoreFn | None) -> InitialPolicies:
    """Sample each (label, folder) candidate once per prompt, score all samples with each PM in one call."""
    if len(candidates) < 2:
        raise ValueError(f"compare at least two initial policies, got {len(candidates)}")
    samples = [draw(path) for _, path in candidates]
    if any(len(s) != len(prompt_texts) for s in samples):
        raise ValueError(f"each policy must answer every one of the {len(prompt_texts)} prompts once")
    flat = [x for s in samples for x in s]
    prompts = prompt_texts * len(candidates)
    def per_policy(scores: list[float]) -> list[list[float]]:
        return [scores[k * len(prompt_texts):(k + 1) * len(prompt_texts)] for k in range(len(candidates))]
    train = per_policy(train_score(prompts, [t for _, t in flat], [ids for ids, _ in flat]))
    test = per_policy(test_score(prompts, [t for _, t in flat], [ids for ids, _ in flat])) if test_score else None
    judged = test or train
    diffs = [paired_gap(s, judged[0]) if k else (0.0, 0.0) for k, s in enumerate(judged)]
    train_ms, test_ms = [mean_se(s) for s in train], [mean_se(s) for s in test] if test else None
    return InitialPolicies(labels=[lbl for lbl, _ in candidates], policies=[p for _, p in candidates],
                           prompts=len(prompt_texts), train_pm=[m for m, _ in train_ms],
                           train_pm_se=[se for _, se in train_ms], test_pm=[m for m, _ in test_ms] if test_ms else None,
                           test_pm_se=[se for _, se in test_ms] if test_ms else None, vs_first=[d for d, _ in diffs],
                           vs_first_se=[se for _, se in diffs],
                           response_tokens=[sum(len(ids) for ids, _ in s) / len(s) for s in samples])


def write_initial_policies(result: InitialPolicies, run_dir: str) -> InitialPolicies:
    """`<run>/analysis/initial_policies.json` and a bar chart of both PMs' mean scores per candidate."""
    path = write_result(result, result_path(run_dir, InitialPolicies))
    test, test_se = result.test_pm or result.train_pm, result.test_pm_se or result.train_pm_se
    before_after_bars(result.labels, result.train_pm, test, result.train_pm_se, test_se, path.with_suffix(".png"),
                      "mean PM score (normalized)", "Initial policies on held-out prompts",
                      labels=("train PM", "test PM" if result.test_pm else "train PM"))
    return result
