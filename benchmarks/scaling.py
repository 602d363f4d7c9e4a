"""`scaling`: the same generation work on 1 and on 2 engines (the 2-rank trainer figure comes from `pm`)."""

from __future__ import annotations

import time

from benchmarks.common import Fixture, generated_tokens


def bench_rollout_scaling(fx: Fixture, quick: bool) -> dict:
    """The same generation work on 1 and on 2 engines."""
    from hh_ray.config import RolloutConfig
    from hh_ray.workers.rollout import RolloutGroup, Sampling

    prompts = fx.prompts[: (32 if quick else 64)]
    rates = {}
    for k in (1, 2):
        g = RolloutGroup(fx.models["small"], RolloutConfig(num_engines=k, min_engines=1, max_engines=k,
                                                           gpus_per_engine=fx.gpu,
                                                           cpus_per_engine=1.0, kv_cache_gb=0.5), 256)
        g.generate(prompts[:2], Sampling(max_new_tokens=4), [0, 1])
        t0 = time.perf_counter()
        samples = g.generate(prompts, Sampling(max_new_tokens=32, ignore_eos=True), list(range(len(prompts))))
        rates[k] = generated_tokens(samples) / (time.perf_counter() - t0)
        g.shutdown()
    return {"tokens_per_s_1": rates[1], "tokens_per_s_2": rates[2], "rollout_2_over_1": rates[2] / rates[1]}
