"""Drivers of the analysis commands that need Ray or a job config: `hh-ray bon` (best-of-N) and
`hh-ray tradeoff` (a sweep over the harmless weight of the PM's data mix).

Best-of-N samples from the run's initial policy (its SFT export, else the preset it starts from) on the job's
held-out prompts, as PPO's evaluation does, so its points share the axes of the PPO curve.
"""

from __future__ import annotations

from pathlib import Path

from hh_ray.analysis.best_of_n import BestOfNConfig, best_of_n, scorer_for_one_call, write_best_of_n
from hh_ray.analysis.tradeoff import HARMLESS, pm_tradeoff, write_tradeoff
from hh_ray.report.results import BestOfN, Tradeoff


def _scorer(spec: str, policy: str, cfg):
    """A ScorerGroup for `substring:<t>` or a PM folder (keywords: the same call before and after issue 10)."""
    from hh_ray.workers.scorer import ScorerGroup

    if not spec.startswith("substring:") and not (Path(spec) / "config.json").is_file():
        raise FileNotFoundError(f"no PM at {spec}; train one with `hh-ray pm` or pass a scorer")
    name = "pm" if not spec.startswith("substring:") else spec
    return ScorerGroup(scorer=name, pm_path=spec, policy_tokenizer=policy, max_tokens=cfg.pm.max_tokens,
                       cpus=cfg.ppo.scorer_cpus, gpus=cfg.ppo.scorer_gpus)


def run_best_of_n(cfg, bon: BestOfNConfig) -> BestOfN:
    """Start a rollout group and the scorers, run best-of-N on held-out prompts, write analysis/bon.json + PNG."""
    from hh_ray.data import load_train_holdout
    from hh_ray.data.hh import unique_prompts
    from hh_ray.data.tokenize import load_tokenizer, truncate_prompt
    from hh_ray.driver.cluster import connect
    from hh_ray.driver.sft import initial_policy
    from hh_ray.workers.rollout import RolloutGroup

    run_dir = Path(cfg.run_dir)
    sft = run_dir / "sft"
    policy = bon.policy or (str(sft) if (sft / "config.json").is_file() else initial_policy(cfg))
    train_spec, test_spec = bon.train_pm or str(run_dir / "pm"), bon.test_pm or None
    train, held, _ = load_train_holdout(cfg.data, cfg.seed)
    prompts = unique_prompts(held)[: bon.prompts] or unique_prompts(train)[-bon.prompts:]
    tok = load_tokenizer(policy)
    ids = [truncate_prompt(tok, t, cfg.data.max_prompt_tokens) for t in prompts]
    connect(cfg.ray)
    rollout = RolloutGroup(policy, cfg.ppo.rollout, cfg.data.max_prompt_tokens + bon.max_new_tokens + 8,
                           seed=cfg.seed, name="bon-rollout")
    train_score = scorer_for_one_call(lambda: _scorer(train_spec, policy, cfg))
    test_score = scorer_for_one_call(lambda: _scorer(test_spec, policy, cfg)) if test_spec else None
    try:
        result = best_of_n(rollout, train_score, test_score, prompts, ids, bon, policy, train_spec, test_spec)
    finally:
        rollout.shutdown()
    write_best_of_n(result, str(run_dir))
    print(f"[bon] {result.prompts} prompts, n = {result.ns}: train PM " +
          ", ".join(f"{s:+.3f}" for s in result.train_pm) + f" -> {run_dir / 'analysis' / 'bon.json'}")
    return result


def run_harmless_sweep(cfg, weights: list[float]) -> Tradeoff:
    """Train one PM per harmless-base weight in the data mix (each in <run_dir>/harmless-w<w>, reused when done),
    then place them in the helpful/harmless accuracy plane: writes <run_dir>/analysis/tradeoff.json + PNG."""
    from dataclasses import replace

    from hh_ray.driver.pm import run_pm

    if not weights or any(w < 0 for w in weights):
        raise ValueError(f"harmless weights must be >= 0, got {weights}")
    evals = []
    for w in weights:
        mix = dict(cfg.data.subset_weights) | {HARMLESS: w}
        sub = replace(cfg, run_dir=f"{cfg.run_dir}/harmless-w{w:g}", data=replace(cfg.data, subset_weights=mix))
        path = Path(sub.run_dir) / "pm" / "pm_eval.json"
        if not path.is_file():
            run_pm(sub)
        evals.append((f"harmless x{w:g}", path))
    t = cfg.pm.trainer
    notes = (f"One PM per harmless-base weight {weights} in the training mix (data.subset_weights); other settings "
             f"from the job `{cfg.name}`: backbone {cfg.pm.backbone}, {cfg.pm.epochs:g} epochs over "
             f"data.max_examples {cfg.data.max_examples or 'all'} comparisons, lr {t.lr:g} (warmup {t.warmup_steps}, "
             f"decay to step {t.total_steps}), max_tokens {cfg.pm.max_tokens}, holdout {cfg.data.holdout_fraction:g}.")
    result = write_tradeoff(pm_tradeoff(evals, notes=notes), cfg.run_dir)
    for p in result.points:
        print(f"[tradeoff] {p.label}: helpful {p.helpful:.3f} ± {p.helpful_se:.3f}, harmless {p.harmless:.3f} ± "
              f"{p.harmless_se:.3f}")
    print(f"[tradeoff] above every baseline on both axes: {result.above_all_baselines or 'none'}")
    return result
