"""Drivers of the paper's analyses over a run folder: `hh-ray bon` (best-of-N), `hh-ray tradeoff` (a sweep over
the harmless weight of the PM's data mix, and the run's policies on the same plane), `hh-ray alignment-tax` and
`hh-ray ood`; `hh-ray run` calls the same functions as stages (jobs/paper.yaml).

Best-of-N samples from the run's initial policy (its SFT export, else the preset it starts from) on the job's
held-out prompts, as PPO's evaluation does, so its points share the axes of the PPO curve.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hh_ray.analysis.alignment_tax import AlignmentTaxConfig, alignment_tax, hh_task_folder
from hh_ray.analysis.best_of_n import BestOfNConfig, best_of_n, draw, scorer_for_one_call, write_best_of_n
from hh_ray.analysis.initial_policies import compare_initial_policies, write_initial_policies
from hh_ray.analysis.ood import OODConfig, ood_detection
from hh_ray.analysis.tradeoff import HARMLESS, pm_tradeoff, policy_point_from_samples, policy_tradeoff, write_tradeoff
from hh_ray.config import JobConfig, train_dtype
from hh_ray.data import load_train_holdout, unique_prompts
from hh_ray.data.tokenize import load_tokenizer, truncate_prompt
from hh_ray.driver.cluster import connect
from hh_ray.driver.pm import TEST_PM, resolve_backbone, run_pm
from hh_ray.driver.sft import initial_policy, run_sft, starting_policy
from hh_ray.models.presets import resolve_model
from hh_ray.report.results import OOD, AlignmentTax, BestOfN, InitialPolicies, PolicyTradeoff, Tradeoff
from hh_ray.workers.rollout import RolloutGroup
from hh_ray.workers.scorer import ScorerGroup


def _scorer(spec: str, policy: str, cfg: JobConfig):
    """A ScorerGroup for `substring:<t>` or a PM folder."""
    if not spec.startswith("substring:") and not (Path(spec) / "config.json").is_file():
        raise FileNotFoundError(f"no PM at {spec}; train one with `hh-ray pm` or pass a scorer")
    name = "pm" if not spec.startswith("substring:") else spec
    return ScorerGroup(scorer=name, pm_path=spec, policy_tokenizer=policy, max_tokens=cfg.pm.max_tokens,
                       cpus=cfg.ppo.placement.scorer_cpus, gpus=cfg.ppo.placement.scorer_gpus,
                       dtype=train_dtype(cfg.model), fmt=cfg.data.format)


def _heldout_prompts(cfg: JobConfig, count: int, harmless: tuple[bool | None, ...] = (None,)) -> list[list[str]]:
    """Per filter (True: harmless-base only, False: the other subsets, None: all), the first `count` distinct
    held-out prompts; the data is read once."""
    train, held, _ = load_train_holdout(cfg.data, cfg.seed)
    out = []
    for want in harmless:
        def keep(items):
            return [c for c in items if want is None or (c.subset == HARMLESS) == want]
        prompts = unique_prompts(keep(held))[:count] or unique_prompts(keep(train))[-count:]
        if len(prompts) < 2:
            raise ValueError(f"fewer than 2 {'harmless-base' if want else 'helpful'} prompts in data.subsets "
                             f"{cfg.data.subsets}")
        out.append(prompts)
    return out


def _rollout(cfg: JobConfig, policy: str, max_new_tokens: int, name: str):
    connect(cfg.ray)
    return RolloutGroup(policy, cfg.ppo.rollout, cfg.data.max_prompt_tokens + max_new_tokens + 8, seed=cfg.seed,
                        name=name, dtype=train_dtype(cfg.model))


def _prompt_ids(cfg: JobConfig, policy: str, prompts: list[str]) -> list[list[int]]:
    tok = load_tokenizer(policy, cfg.data.format)
    return [truncate_prompt(tok, t, cfg.data.max_prompt_tokens) for t in prompts]


def run_best_of_n(cfg: JobConfig, bon: BestOfNConfig) -> BestOfN:
    """Start a rollout group and the scorers, run best-of-N on held-out prompts, write analysis/bon.json + PNG."""
    run_dir = Path(cfg.run_dir)
    policy = bon.policy or starting_policy(cfg)
    train_spec, test_spec = bon.train_pm or str(run_dir / "pm"), bon.test_pm or None
    (prompts,) = _heldout_prompts(cfg, bon.prompts)
    ids = _prompt_ids(cfg, policy, prompts)
    rollout = _rollout(cfg, policy, bon.max_new_tokens, "bon-rollout")
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


SFT_MODE_LABELS = {"context_distill": "context distillation", "sft": "SFT on chosen responses"}


def run_initial_policies(cfg: JobConfig, prompts: int) -> InitialPolicies:
    """The run's initial policy against the other `sft.mode` (trained with the same settings into
    <run_dir>/initial-<mode>, reused when done) and the model both start from; each samples once per held-out
    prompt and both PMs score every sample: writes analysis/initial_policies.json + PNG."""
    run_dir = Path(cfg.run_dir)
    own = run_dir / "sft"
    if not (own / "config.json").is_file():
        raise FileNotFoundError(f"no SFT policy at {own}; run the sft stage first")
    other = "sft" if cfg.sft.mode == "context_distill" else "context_distill"
    alt = replace(cfg, run_dir=str(run_dir / f"initial-{other}"), sft=replace(cfg.sft, mode=other))
    alt_policy = Path(alt.run_dir) / "sft"
    if not (alt_policy / "config.json").is_file():
        run_sft(alt)
    candidates = [(SFT_MODE_LABELS[cfg.sft.mode] + " (the run's)", str(own)),
                  (SFT_MODE_LABELS[other], str(alt_policy)), ("no fine-tuning", initial_policy(cfg))]
    (texts,) = _heldout_prompts(cfg, prompts)
    r = cfg.ppo.rollout

    def sample(policy: str):
        rollout = _rollout(cfg, policy, r.max_new_tokens, "initial-rollout")
        try:
            return draw(rollout, _prompt_ids(cfg, policy, texts), 1, r.temperature, r.top_p, r.max_new_tokens,
                        cfg.seed)
        finally:
            rollout.shutdown()
    pm, test_pm = str(run_dir / "pm"), run_dir / TEST_PM
    result = compare_initial_policies(
        candidates, texts, sample, scorer_for_one_call(lambda: _scorer(pm, str(own), cfg)),
        scorer_for_one_call(lambda: _scorer(str(test_pm), str(own), cfg)) if cfg.pm.test_split else None)
    write_initial_policies(result, str(run_dir))
    for k, label in enumerate(result.labels):
        print(f"[initial] {label}: {'test' if result.test_pm else 'train'} PM "
              f"{(result.test_pm or result.train_pm)[k]:+.3f}, vs the run's {result.vs_first[k]:+.3f} ± "
              f"{result.vs_first_se[k]:.3f}")
    return result


def run_harmless_sweep(cfg: JobConfig, weights: list[float], harmless_only: bool = False) -> Tradeoff:
    """Train one PM per harmless-base weight in the data mix (each in <run_dir>/harmless-w<w>, reused when done),
    and with `harmless_only` one on harmless-base alone (<run_dir>/harmless-only), then place them in the
    helpful/harmless accuracy plane: writes <run_dir>/analysis/tradeoff.json + PNG. Weight 0 is the helpful-only
    PM. Each PM learns from the pairs the run's PM learned from (with pm.test_split, the same half), so the run's
    PM is the point of its own weight; `pm.backbone: sft` means the run's SFT policy."""
    if not weights or any(w < 0 for w in weights):
        raise ValueError(f"harmless weights must be >= 0, got {weights}")
    own, own_eval = cfg.data.subset_weights.get(HARMLESS, 1.0), Path(cfg.run_dir) / "pm" / "pm_eval.json"
    reuse_own = own_eval.is_file()
    backbone = resolve_backbone(cfg)
    todo = sorted(set(weights) - ({own} if reuse_own else set()))
    mixes = [(f"harmless x{w:g}" + (" (helpful only)" if w == 0 else ""), f"harmless-w{w:g}",
              dict(cfg.data.subset_weights) | {HARMLESS: w}) for w in todo]
    if harmless_only:
        mixes.append(("harmless only", "harmless-only", {s: 0.0 for s in cfg.data.subsets if s != HARMLESS}))
    evals = [(f"harmless x{own:g} (the run's PM)", own_eval)] if reuse_own else []
    for label, folder, mix in mixes:
        sub = replace(cfg, run_dir=f"{cfg.run_dir}/{folder}", data=replace(cfg.data, subset_weights=mix),
                      pm=replace(cfg.pm, backbone=backbone))
        path = Path(sub.run_dir) / "pm" / "pm_eval.json"
        if not path.is_file():
            run_pm(sub, with_test_pm=False)
        evals.append((label, path))
    t = cfg.pm.trainer
    schedule = f"decay to step {t.total_steps}" if t.total_steps else "then constant"
    notes = (f"One PM per harmless-base weight {weights} in the training mix (data.subset_weights)"
             f"{', and one on harmless-base alone' if harmless_only else ''}; other settings "
             f"from the job `{cfg.name}`: backbone {cfg.pm.backbone}, {cfg.pm.epochs:g} epochs over "
             f"data.max_examples {cfg.data.max_examples or 'all'} comparisons"
             f"{' (the first half of the train side, as pm.test_split gives the run PM)' if cfg.pm.test_split else ''}"
             f", lr {t.lr:g} (warmup {t.warmup_steps}, {schedule}), max_tokens {cfg.pm.max_tokens}, holdout "
             f"{cfg.data.holdout_fraction:g}.")
    result = write_tradeoff(pm_tradeoff(evals, notes=notes), cfg.run_dir)
    for p in result.points:
        print(f"[tradeoff] {p.label}: helpful {p.helpful:.3f} ± {p.helpful_se:.3f}, harmless {p.harmless:.3f} ± "
              f"{p.harmless_se:.3f}")
    print(f"[tradeoff] above every baseline on both axes: {result.above_all_baselines or 'none'}")
    return result


def run_policy_tradeoff(cfg: JobConfig, prompts: int) -> Tradeoff:
    """The initial and the final (PPO) policy in the helpful/harmless plane: one sample per held-out helpful and
    harmless-base prompt, scored by the run's PM; writes analysis/tradeoff_policies.json + PNG."""
    run_dir = Path(cfg.run_dir)
    final = run_dir / "ppo" / "policy"
    if not (final / "config.json").is_file():
        raise FileNotFoundError(f"no PPO policy at {final}; run the ppo stage first")
    pm = cfg.ppo.reward.scorer if cfg.ppo.reward.scorer != "pm" else str(run_dir / "pm")
    helpful, harmless = _heldout_prompts(cfg, prompts, harmless=(False, True))
    points = []
    for label, policy in (("initial", starting_policy(cfg)), ("ppo", str(final))):
        rollout = _rollout(cfg, policy, cfg.ppo.rollout.max_new_tokens, "tradeoff-rollout")
        try:
            score = scorer_for_one_call(lambda p=policy: _scorer(pm, p, cfg))
            points.append(policy_point_from_samples(
                label, rollout, score, (helpful, _prompt_ids(cfg, policy, helpful)),
                (harmless, _prompt_ids(cfg, policy, harmless)), cfg.ppo.rollout.max_new_tokens,
                cfg.ppo.rollout.temperature, cfg.seed))
        finally:
            rollout.shutdown()
    notes = (f"One sample per prompt ({len(helpful)} helpful and {len(harmless)} harmless-base held-out prompts), "
             f"scored by the run's PM (`{pm}`), normalised by its own held-out statistics. One PM scores both axes: "
             f"its per-subset scores, since the run trains one PM on the mix, as the paper's main PMs are.")
    result = write_tradeoff(PolicyTradeoff(**vars(policy_tradeoff(points, baseline="initial", notes=notes))),
                            cfg.run_dir)
    for p in result.points:
        print(f"[tradeoff] policy {p.label}: helpful {p.helpful:+.3f} ± {p.helpful_se:.3f}, harmless "
              f"{p.harmless:+.3f} ± {p.harmless_se:.3f}")
    return result


def run_alignment_tax(cfg: JobConfig) -> AlignmentTax:
    """lm-eval before (the initial policy) and after (the PPO policy) on the configured tasks, or on local HH
    choice tasks written into the run folder when none are configured (no hub needed)."""
    a = cfg.analyses
    tax = AlignmentTaxConfig(before=starting_policy(cfg), after=str(Path(cfg.run_dir) / "ppo" / "policy"),
                             run_dir=cfg.run_dir, limit=a.lm_eval_limit)
    if a.lm_eval_tasks:
        tax.tasks = list(a.lm_eval_tasks)
    else:
        tax.include_path, tax.tasks = hh_task_folder(cfg.run_dir, cfg.data.data_dir, a.hh_task_questions)
    return alignment_tax(tax)


def run_ood(cfg: JobConfig) -> OOD:
    """Mahalanobis OOD detection of harmless-base requests on the activations of the run's PM, its final policy
    or any HF folder (analyses.ood_model)."""
    a, run_dir = cfg.analyses, Path(cfg.run_dir)
    model = {"pm": str(run_dir / "pm"), "policy": str(run_dir / "ppo" / "policy")}.get(a.ood_model, a.ood_model)
    return ood_detection(OODConfig(model=resolve_model(model), run_dir=cfg.run_dir, data_dir=cfg.data.data_dir,
                                   layer=a.ood_layer, layers=list(a.ood_layers), fit_prompts=a.ood_fit_prompts,
                                   val_prompts=a.ood_val_prompts, test_prompts=a.ood_test_prompts, seed=cfg.seed))
