"""Best-of-N (Bai et al. sec. 4.3; Stiennon et al. 2020): sample N responses per held-out prompt from the initial
policy, keep the one the train PM scores highest, and score the kept one with both PMs. Its KL from the initial
policy is log N - (N - 1) / N, so it sits on the same sqrt(KL) axis as PPO.

Samples are drawn once, max(ns) per prompt, and best-of-n for each n takes the first n of them: the first n of
N i.i.d. samples are n i.i.d. samples, so every n is an unbiased best-of-n estimate (the n share samples, so
their estimates are correlated, which makes the curve smoother than independent draws would).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hh_ray.algo.analysis import best_of_n_indices, kl_best_of_n, mean_se
from hh_ray.algo.ppo import sqrt_kl
from hh_ray.report.plots import score_vs_sqrt_kl
from hh_ray.report.results import BestOfN, result_path, write_result


@dataclass
class BestOfNConfig:
    """`hh-ray bon`: which n, how many held-out prompts, the scorers (PM folders or `substring:<t>`)."""

    ns: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    prompts: int = 32  # held-out prompts
    policy: str = ""  # HF folder of the initial policy; empty = the run's SFT policy
    train_pm: str = ""  # the PM PPO trains against; empty = <run_dir>/pm
    test_pm: str = ""  # the held-out PM (pm.test_split); empty = none
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    seed: int = 0


ScoreFn = Callable[[list[str], list[str], list[list[int]]], list[float]]
"""(prompt texts, response texts, response ids) -> one score per response, in order."""


def scorer_for_one_call(start: Callable[[], object]) -> ScoreFn:
    """A ScoreFn that starts its ScorerGroup when called and stops it after: two PMs then never hold resources
    (or the group's actor names) at the same time."""

    def score(prompts: list[str], responses: list[str], ids: list[list[int]]) -> list[float]:
        group = start()
        try:
            return group.score_async(prompts, responses, ids)()
        finally:
            group.shutdown()

    return score


def draw(rollout, prompt_ids: list[list[int]], n: int, temperature: float, top_p: float, max_new_tokens: int,
         seed: int) -> list[tuple[list[int], str]]:
    """n seeded samples per prompt, prompt-major ([i * n + j]: sample j of prompt i): (response ids, text).
    The seeds depend on the prompt's position only, so two policies drawn alike are paired prompt by prompt."""
    from hh_ray.workers.rollout import Sampling

    if not prompt_ids:
        raise ValueError("need prompts: got none")
    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, n=n)
    seeds = [seed * 1_000_003 + i for i in range(len(prompt_ids))]
    return [(s.response, s.text) for s in rollout.generate(prompt_ids, sampling, seeds)]


def draw_and_score(rollout, score: ScoreFn, prompt_texts: list[str], prompt_ids: list[list[int]], n: int,
                   temperature: float, top_p: float, max_new_tokens: int, seed: int):
    """n seeded samples per prompt and their scores: ([(response ids, text)] prompt-major, [P, n] scores)."""
    if len(prompt_ids) != len(prompt_texts):
        raise ValueError(f"need prompts: got {len(prompt_texts)} texts and {len(prompt_ids)} id lists")
    samples = draw(rollout, prompt_ids, n, temperature, top_p, max_new_tokens, seed)
    flat_prompts = [prompt_texts[k // n] for k in range(len(samples))]
    scores = score(flat_prompts, [t for _, t in samples], [ids for ids, _ in samples])
    return samples, torch.tensor(scores, dtype=torch.float64).view(len(prompt_ids), n)


def best_of_n(rollout, train_score: ScoreFn, test_score: ScoreFn | None, prompt_texts: list[str],
              prompt_ids: list[list[int]], cfg: BestOfNConfig, policy_name: str, train_name: str,
              test_name: str | None) -> BestOfN:
    """Best-of-n for every n in cfg.ns from one draw of max(ns) samples per prompt.

    `rollout` is a RolloutGroup holding the initial policy. The train PM scores every sample, then the test PM
    (if any) scores only the samples some n keeps.
    """
    ns = sorted(set(cfg.ns))
    if not ns or ns[0] < 1:
        raise ValueError(f"bon ns must be positive integers, got {cfg.ns}")
    n_max, n_prompts = ns[-1], len(prompt_ids)
    samples, train_m = draw_and_score(rollout, train_score, prompt_texts, prompt_ids, n_max, cfg.temperature,
                                      cfg.top_p, cfg.max_new_tokens, cfg.seed)
    flat_prompts = [prompt_texts[k // n_max] for k in range(len(samples))]
    kept = {n: best_of_n_indices(train_m, n).tolist() for n in ns}
    rows = list(range(n_prompts))
    test_by_flat: dict[int, float] = {}
    if test_score is not None:
        flat = sorted({i * n_max + j for n in ns for i, j in zip(rows, kept[n])})
        scored = test_score([flat_prompts[k] for k in flat], [samples[k][1] for k in flat],
                         [samples[k][0] for k in flat])
        test_by_flat = dict(zip(flat, scored))
    # per n: (mean, standard error) over prompts of the kept sample's score
    train = [mean_se([float(train_m[i, j]) for i, j in zip(rows, kept[n])]) for n in ns]
    test = ([mean_se([test_by_flat[i * n_max + j] for i, j in zip(rows, kept[n])]) for n in ns]
            if test_score is not None else [])
    return BestOfN(ns=ns, kl=[kl_best_of_n(n) for n in ns], train_pm=[m for m, _ in train],
                   train_pm_se=[se for _, se in train], test_pm=[m for m, _ in test] or None,
                   test_pm_se=[se for _, se in test] or None, prompts=n_prompts, policy=policy_name,
                   train_scorer=train_name, test_scorer=test_name, temperature=cfg.temperature,
                   max_new_tokens=cfg.max_new_tokens)


def write_best_of_n(result: BestOfN, run_dir: str) -> BestOfN:
    """`<run>/analysis/bon.json` and `bon.png` (PM score against sqrt(KL_bon), the axes of the PPO plot)."""
    path = write_result(result, result_path(run_dir, BestOfN))
    xs = [sqrt_kl(k) for k in result.kl]
    curves = {"best-of-N (test PM)": (xs, result.test_pm)} if result.test_pm else None
    score_vs_sqrt_kl(xs, result.train_pm, result.ns, path.with_suffix(".png"), curves=curves,
                     title="Best-of-N: PM score vs sqrt(KL)", points_label="best-of-N (train PM)", color_label="N")
    return result
