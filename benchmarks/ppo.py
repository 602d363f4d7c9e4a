"""`ppo`: a short PPO run on the tiny preset, seconds per step by phase, samples/s, peak memory per group."""

from __future__ import annotations

from benchmarks.common import Fixture, med, ppo_run

WORKER_PHASES = ("generate", "experience", "train", "sync")  # phases the driver spends waiting on worker groups


def bench_ppo(fx: Fixture, quick: bool) -> dict:
    """A short PPO run on the tiny preset: seconds per step by phase, samples/s, peak memory per group.

    Phases are the run's own (`time/<phase>`); the step is their sum. The driver's overhead is what is left of
    a step's wall time (run log clock, logging included) once the worker phases are taken out: advantages, batch
    bookkeeping and logging. Peak memory is each group's largest actor process (resident set; vLLM's KV cache is
    sized 1 GiB here).
    """
    rows, wall, memory = ppo_run(fx, "ppo-run", "tiny", 4 if quick else 10)
    phases = {k.removeprefix("time/"): med([r[k] for r in rows])
              for k in rows[0] if k.startswith("time/") and k != "time/step"}
    driver = [(w - sum(r[f"time/{p}"] for p in WORKER_PHASES)) / w for r, w in zip(rows, wall)]
    return {"phase_seconds": phases, "step_seconds": med([r["time/step"] for r in rows]),
            "samples_per_s": med([r["perf/samples_per_s"] for r in rows]), "driver_overhead_fraction": med(driver),
            "samples_per_step": rows[0]["perf/samples"],
            "peak_memory_mb": {group: m["rss_peak_mb"] for group, m in memory.items()}}
