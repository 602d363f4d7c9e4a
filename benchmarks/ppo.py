"""`ppo`: a short PPO run on the tiny preset, seconds per step by phase, samples/s, peak memory per group."""

from __future__ import annotations

from benchmarks.common import Fixture, med, ppo_record

WORKER_PHASES = ("generate", "experience", "train", "sync")  # phases the driver spends waiting on worker groups


def bench_ppo(fx: Fixture, quick: bool) -> dict:
    """A short PPO run on the tiny preset: seconds per step by phase, samples/s, peak memory per group.

    Phases are the run's own (`time/<phase>`); the step is their sum. The driver's overhead is what is left of
    a step's wall time (run log clock, logging included) once the worker phases are taken out: advantages, batch
    bookkeeping and logging. Peak memory is each group's largest actor process (resident set; vLLM's KV cache is
    sized 1 GiB here).
    """
    from hh_ray.config import load_config
    from hh_ray.driver.ppo import run_ppo

    run = fx.root / "ppo-run"
    steps = 4 if quick else 10
    cfg = load_config(None, [f"run_dir={run}", "model.policy=tiny", "ppo.scorer=substring:e", f"ppo.steps={steps}",
                             "ppo.prompts_per_step=16", "ppo.rollout.samples_per_prompt=2", "ppo.eval_prompts=8",
                             "ppo.rollout.max_new_tokens=32", "data.max_prompt_tokens=128",
                             "ppo.policy_trainer.micro_batch_size=32", "ppo.critic_trainer.micro_batch_size=32",
                             *fx.ppo_overrides()])
    run_ppo(cfg)
    rows, wall, memory = ppo_record(run)
    phases = {k.removeprefix("time/"): med([r[k] for r in rows])
              for k in rows[0] if k.startswith("time/") and k != "time/step"}
    driver = [(w - sum(r[f"time/{p}"] for p in WORKER_PHASES)) / w for r, w in zip(rows, wall)]
    return {"phase_seconds": phases, "step_seconds": med([r["time/step"] for r in rows]),
            "samples_per_s": med([r["perf/samples_per_s"] for r in rows]), "driver_overhead_fraction": med(driver),
            "samples_per_step": rows[0]["perf/samples"],
            "peak_memory_mb": {group: m["rss_peak_mb"] for group, m in memory.items()}}
