"""PPO metrics on Ray's Prometheus endpoint (`ray.util.metrics`), tagged by run and role.

The driver sets every gauge once per step from the step's metrics, so all series come from the driver's node.
`run` is the config's `name` (Prometheus keeps `job` for its own scrape job, so a `job` tag would be renamed
`exported_job`); `role` says which actor group measured the quantity (rollout, scorer, policy-trainer, driver),
not which process exports it. Prometheus scrapes Ray's metrics port through Ray's service-discovery file
(`cluster/prometheus.yml`) and `cluster/grafana-hh-ray.json` plots them.
"""

from __future__ import annotations

# gauge name -> (the step metric it shows, role, description); set once per PPO step
GAUGES = {
    "generated_tokens_per_s": ("rollout/tokens_per_s", "rollout", "tokens generated per second of generation"),
    "samples_per_s": ("perf/samples_per_s", "driver", "PPO samples per second of whole step"),
    "engines": ("rollout/engines", "rollout", "vLLM engines serving"),
    "reward": ("objective/reward", "driver", "mean per-sample reward r_PM - lambda_KL * KL"),
    "kl": ("objective/kl", "driver", "mean per-sample KL(policy || reference), nats summed over the response"),
    "pm_score": ("objective/pm_score", "scorer", "mean normalized PM score of the step's samples"),
    "logprob_gap": ("rollout/logprob_gap_mean", "rollout", "mean |engine - trainer| logprob of sampled tokens"),
    "queue_depth": ("rollout/queue_depth", "rollout", "samples queued for generation: async, the next step's "
                                                       "batch in flight; sync, the step's backlog beyond the pool"),
    "sync_seconds": ("time/sync", "policy-trainer", "seconds to move the policy into the engines"),
    "sync_bytes": ("sync/bytes", "policy-trainer", "bytes broadcast in the last weight sync"),
}
PHASES = ("generate", "experience", "advantages", "train", "sync")


class PPOMetrics:
    """One gauge per quantity plus `hh_ray_phase_seconds{phase=...}`; `record` maps a step's metrics onto them."""

    def __init__(self, run: str):
        from ray.util.metrics import Counter, Gauge

        self.run = run
        self.gauges = {name: Gauge(f"hh_ray_{name}", description=desc, tag_keys=("run", "role"))
                       for name, (_, _, desc) in GAUGES.items()}
        self.phase = Gauge("hh_ray_phase_seconds", description="seconds per PPO phase in the last step",
                           tag_keys=("run", "role", "phase"))
        self.steps = Counter("hh_ray_ppo_steps", description="PPO steps completed", tag_keys=("run", "role"))

    def record(self, m: dict) -> None:
        for name, (key, role, _) in GAUGES.items():
            if key in m:
                self.gauges[name].set(float(m[key]), tags={"run": self.run, "role": role})
        for phase in PHASES:
            if f"time/{phase}" in m:
                self.phase.set(float(m[f"time/{phase}"]), tags={"run": self.run, "role": "driver", "phase": phase})
        self.steps.inc(1.0, tags={"run": self.run, "role": "driver"})
