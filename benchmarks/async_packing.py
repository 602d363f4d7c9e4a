"""`async`: PPO samples/s with rollout overlapped with training (one step off-policy) against the synchronous
loop at equal settings, and the reward curves of both in one PNG. `packing`: the share of forward-pass token
slots that padding takes on real PPO batches, and the trainer's tokens/s padded against packed."""

from __future__ import annotations

from benchmarks.common import Fixture, med, ppo_run
from benchmarks.device import seconds_each

# in both runs: only the overlap differs
ENGINE_LOGPROBS = ("ppo.algo.old_logprobs=engine", "logging.tensorboard=false")


def bench_async(fx: Fixture, quick: bool) -> dict:
    """Sync and async runs of the same job (engine logprobs in both, so only the overlap differs)."""
    from hh_ray.report.plots import line_plot

    out: dict = {}
    for preset in ("tiny",) if quick else ("tiny", "small", "smollm2-135m"):
        # the real model as its job trains it (LoRA on the top layers, bf16 where the CPU has it), fewer steps
        # (engine logprobs need fp32, so in bf16 both runs use the trainer's: again only the overlap differs)
        steps, extra = (4 if quick else 12), ENGINE_LOGPROBS
        if preset == "smollm2-135m":
            steps, extra = 6, ("ppo.policy_trainer.lora={rank: 16, top_layers: 12}", "logging.tensorboard=false",
                               "ppo.critic_trainer.lora={rank: 16, top_layers: 12}", "ppo.prompts_per_step=8")
        sync_rows, sync_wall, _ = ppo_run(fx, f"sync-{preset}", preset, steps, *extra)
        async_rows, async_wall, _ = ppo_run(fx, f"async-{preset}", preset, steps, *extra, "ppo.async_rollout=true")
        def per_s(rows, wall):
            return med([r["perf/samples"] / w for r, w in zip(rows, wall)])
        s, a = per_s(sync_rows, sync_wall), per_s(async_rows, async_wall)
        png = fx.root / f"async_reward_{preset}.png"
        phases = {f"{mode}_phase_seconds": {k[5:]: med([r[k] for r in rows]) for k in rows[0] if k.startswith("time/")}
                  for mode, rows in (("sync", sync_rows), ("async", async_rows))}
        out[preset] = {"sync_samples_per_s": s, "async_samples_per_s": a, "speedup": a / s, "reward_png": str(png),
                       **phases}
        line_plot([r["step"] for r in sync_rows], {
            "sync": [r["objective/reward"] for r in sync_rows],
            "async (one version behind)": [r["objective/reward"] for r in async_rows]},
            "PPO step", "reward per sample", f"Reward, sync vs async ({preset})", png)
    first = out["tiny"]
    return out | {"samples_per_s": first["async_samples_per_s"], "speedup": first["speedup"]}


def bench_packing(fx: Fixture, quick: bool) -> dict:
    """Padding share on a real PPO batch (responses of a run's engine), then one policy step padded vs packed."""
    from hh_ray.algo.batch import PolicyBatch
    from hh_ray.config import RolloutConfig, TrainerConfig
    from hh_ray.models.forward import layout
    from hh_ray.models.objectives import PolicyObjective
    from hh_ray.workers.rollout import RolloutGroup, Sampling
    from hh_ray.workers.trainer import TrainerGroup

    model = fx.models["small" if not quick else "tiny"]
    prompts = fx.prompts[:64]
    rollout = RolloutGroup(model, RolloutConfig(cpus_per_engine=1.0, kv_cache_gb=0.5), 256)
    try:
        samples = rollout.generate(prompts, Sampling(max_new_tokens=64), list(range(len(prompts))))
    finally:
        rollout.shutdown()
    responses = [s.response for s in samples]
    pack_to = 4 * max(len(p) + len(r) for p, r in zip(prompts, responses))  # rows of about four samples
    padded, packed = layout(prompts, responses, 0), layout(prompts, responses, 0, pack_to)
    batch = PolicyBatch(prompts, responses, [[-5.0] * len(r) for r in responses], [[1.0] * len(r) for r in responses])
    tokens = sum(len(p) + len(r) for p, r in zip(prompts, responses))
    rates = {}
    for name, pack in (("padded", 0), ("packed", pack_to)):
        group = TrainerGroup(f"pack-{name}", model, "causal_lm",
                             TrainerConfig(micro_batch_size=len(prompts), cpus_per_rank=1.0, lr=1e-6))
        try:
            objective = PolicyObjective(pack_to=pack)
            steps = 2 if quick else 4
            rates[name] = tokens * steps / sum(seconds_each(lambda: group.train(batch, objective), steps, warmup=1))
        finally:
            group.shutdown()
    return {"padding_share": padded.padding_share, "packed_padding_share": packed.padding_share,
            "rows_padded": padded.ids.shape[0], "rows_packed": packed.ids.shape[0],
            "trainer_tokens_per_s": rates, "tokens_per_s_ratio": rates["packed"] / rates["padded"]}
