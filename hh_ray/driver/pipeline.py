"""`hh-ray run`: the whole pipeline, data check -> tokenizer -> SFT -> PM -> PPO -> [the paper's analyses] ->
report. The analyses run only when their stage is listed (`stages:` in jobs/paper.yaml)."""

from __future__ import annotations

import time
from pathlib import Path

from hh_ray.analysis.best_of_n import BestOfNConfig
from hh_ray.config import JobConfig, dump_config
from hh_ray.data import load_train_holdout
from hh_ray.driver import stop
from hh_ray.driver.analyses import (
    run_alignment_tax,
    run_best_of_n,
    run_harmless_sweep,
    run_initial_policies,
    run_ood,
    run_policy_tradeoff,
)
from hh_ray.driver.pm import TEST_PM, run_pm
from hh_ray.driver.ppo import run_ppo
from hh_ray.driver.sft import initial_policy, run_sft
from hh_ray.report.report import write_report


def run_pipeline(cfg: JobConfig) -> Path:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")

    def check_data() -> None:
        train, held, report = load_train_holdout(cfg.data, cfg.seed)
        print(f"[data] {len(train)} train and {len(held)} held-out comparisons from {cfg.data.data_dir} "
              f"({report.total_rejected()} malformed records skipped)")

    def bon() -> None:
        a, test_pm = cfg.analyses, run_dir / TEST_PM
        run_best_of_n(cfg, BestOfNConfig(ns=a.bon_ns, prompts=a.bon_prompts, seed=cfg.seed,
                                         test_pm=str(test_pm) if cfg.pm.test_split else "",
                                         max_new_tokens=cfg.ppo.rollout.max_new_tokens,
                                         temperature=cfg.ppo.rollout.temperature))

    def tradeoff() -> None:
        run_harmless_sweep(cfg, cfg.analyses.harmless_weights, cfg.analyses.harmless_only_pm)
        run_policy_tradeoff(cfg, cfg.analyses.bon_prompts)

    def alignment_tax() -> None:
        for t in run_alignment_tax(cfg).tasks:
            print(f"[alignment-tax] {t.task}: {t.before:.3f} ± {t.before_se:.3f} -> {t.after:.3f} ± {t.after_se:.3f}")

    def ood() -> None:
        r = run_ood(cfg)
        print(f"[ood] AUROC {r.auroc:.3f} ± {r.auroc_se:.3f} at layer {r.layer}")

    stages = {"data": check_data, "tokenizer": lambda: print(f"[tokenizer] initial policy at {initial_policy(cfg)}"),
              "sft": lambda: run_sft(cfg), "pm": lambda: run_pm(cfg), "ppo": lambda: run_ppo(cfg),
              "initial_policies": lambda: run_initial_policies(cfg, cfg.analyses.bon_prompts), "bon": bon,
              "tradeoff": tradeoff, "alignment_tax": alignment_tax,
              "ood": ood, "report": lambda: write_report(run_dir)}
    t0 = time.perf_counter()
    stage_s: dict[str, float] = {}
    chosen = [name for name in stages if name in cfg.stages]
    for i, name in enumerate(chosen, 1):
        if stop.requested():  # a signal during a stage without steps (data, report, ...): stop before the next
            stop.stop(f"before stage {name}; every earlier stage is saved")
        t = time.perf_counter()
        print(f"== stage {i}/{len(chosen)}: {name} ==", flush=True)
        stages[name]()
        stage_s[name] = time.perf_counter() - t
    summary = ", ".join(f"{k} {v:.0f}s" for k, v in stage_s.items())
    print(f"[run] done in {time.perf_counter() - t0:.0f}s ({summary}); report: {run_dir / 'report.md'}")
    return run_dir / "report.md"
