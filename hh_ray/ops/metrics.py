"""PPO metrics on Ray's Prometheus endpoint (`ray.util.metrics`), tagged by job and role.

Ray exports every process's metrics on its metrics port; Prometheus scrapes it (see `cluster/prometheus.yml`)
and the Grafana dashboard `cluster/grafana-hh-ray.json` plots them.
"""

from __future__ import annotations

# name -> (role, description); gauges set once per PPO step
GAUGES = {
    "generated_tokens_per_s": ("rollout", "tokens generated per second of generation"),
    "samples_per_s": ("driver", "PPO samples per second of whole step"),
    "engines": ("rollout", "vLLM engines serving"),
    "queue_depth": ("rollout", "prompts of the step beyond what the engine pool is sized for (backlog)"),
    "reward": ("driver", "mean per-sample reward r_PM - lambda_KL * KL"),
    "kl": ("driver", "mean per-sample KL(policy || reference) in nats"),
    "pm_score": ("scorer", "mean normalized PM score of the step's samples"),
    "sync_seconds": ("policy-trainer", "seconds to move the policy into the engines"),
    "sync_bytes": ("policy-trainer", "bytes broadcast in the last weight sync"),
}
PHASES = ("generate", "reference", "score", "train", "sync", "driver")


class PPOMetrics:
    """One gauge per quantity plus `hh_ray_phase_seconds{phase=...}`; `record` maps a step's metrics onto them."""

    def __init__(self, job: str):
        from ray.util.metrics import Counter, Gauge

        self.job = job
        self.gauges = {name: Gauge(f"hh_ray_{name}", description=desc, tag_keys=("job", "role"))
                       for name, (_, desc) in GAUGES.items()}
        self.phase = Gauge("hh_ray_phase_seconds", description="seconds per PPO phase in the last step",
                           tag_keys=("job", "role", "phase"))
        self.steps = Counter("hh_ray_ppo_steps", description="PPO steps completed", tag_keys=("job", "role"))
        self.tokens = Counter("hh_ray_generated_tokens", description="tokens generated", tag_keys=("job", "role"))

    def record(self, m: dict, engines: int, queue_depth: int = 0) -> None:
        values = {"generated_tokens_per_s": m["tokens_per_s"], "samples_per_s": m["samples_per_s"],
                  "engines": engines, "queue_depth": queue_depth, "reward": m["reward"], "kl": m["kl"],
                  "pm_score": m["pm_score"], "sync_seconds": m["sec_sync"], "sync_bytes": m["sync_bytes"]}
        for name, v in values.items():
            self.gauges[name].set(float(v), tags={"job": self.job, "role": GAUGES[name][0]})
        for phase in PHASES:
            if f"sec_{phase}" in m:
                self.phase.set(float(m[f"sec_{phase}"]), tags={"job": self.job, "role": "driver", "phase": phase})
        self.steps.inc(1.0, tags={"job": self.job, "role": "driver"})
        self.tokens.inc(float(m["response_length"] * m["samples"]), tags={"job": self.job, "role": "rollout"})
