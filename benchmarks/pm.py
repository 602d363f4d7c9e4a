"""`pm`: PM training pairs/s with 1 and 2 DeepSpeed ranks."""

from __future__ import annotations

from benchmarks.common import Fixture
from benchmarks.device import seconds_each


def bench_pm(fx: Fixture, quick: bool) -> dict:
    """PM training pairs/s with 1 and 2 DeepSpeed ranks on the tiny preset (same global batch)."""
    from hh_ray.algo.batch import PairBatch
    from hh_ray.config import TrainerConfig
    from hh_ray.data.tokenize import pm_input_ids
    from hh_ray.models.objectives import PMObjective
    from hh_ray.workers.trainer import TrainerGroup

    items = fx.items[:16]
    batch = PairBatch(chosen=[pm_input_ids(fx.tok, c.prompt, c.chosen, 256) for c in items],
                      rejected=[pm_input_ids(fx.tok, c.prompt, c.rejected, 256) for c in items])
    objective = PMObjective()
    steps = 3 if quick else 8
    out = {}
    for ranks in (1, 2):
        g = TrainerGroup(f"bench-pm-{ranks}", fx.models["tiny"], "pm",
                         TrainerConfig(num_ranks=ranks, micro_batch_size=16 // ranks, cpus_per_rank=1.0,
                                       gpus_per_rank=fx.gpu, lr=1e-4))
        seconds = sum(seconds_each(lambda: g.train(batch, objective), steps, warmup=1))  # warm-up: optimizer state
        out[f"pairs_per_s_{ranks}_rank"] = len(items) * steps / seconds
        g.shutdown()
    out["trainer_2_over_1"] = out["pairs_per_s_2_rank"] / out["pairs_per_s_1_rank"]
    return out
