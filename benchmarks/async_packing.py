"""`async`: PPO samples/s with rollout overlapped with training (one step off-policy) against the synchronous
loop at equal settings, and the reward curves of both in one PNG. `packing`: the share of forward-pass token
slots that padding takes on real PPO batches, and the trainer's tokens/s padded against packed."""

from __future__ import annotations

import time

from benchmarks.common import Fixture, med, ppo_record


def _ppo_run(fx: Fixture, name: str, preset: str, steps: int, *overrides: str) -> list[dict]:
    from hh_ray.config import load_config
    from hh_ray.driver.ppo import run_ppo

    run = fx.root / name
    run_ppo(load_config(None, [
        f"run_dir={run}", f"model.policy={preset}", "ppo.scorer=substring:e", f"ppo.steps={steps}",
        "ppo.prompts_per_step=16", "ppo.rollout.samples_per_prompt=2", "ppo.eval_prompts=8",
        "ppo.rollout.max_new_tokens=32", "data.max_prompt_tokens=128", "ppo.old_logprobs=engine",
        "ppo.policy_trainer.micro_batch_size=32", "ppo.critic_trainer.micro_batch_size=32",
        "logging.tensorboard=false", *fx.ppo_overrides(), *overrides]))
    return ppo_record(run)


def bench_async(fx: Fixture, quick: bool) -> dict:
    """Sync and async runs of the same job (engine logprobs in both, so only the overlap differs)."""
    from hh_ray.report.plots import line_plot

    steps = 4 if quick else 12
    out: dict = {}
    for preset in ("tiny",) if quick else ("tiny", "small"):
        sync_rows, sync_wall, _ = _ppo_run(fx, f"sync-{preset}", preset, steps)
        async_rows, async_wall, _ = _ppo_run(fx, f"async-{preset}", preset, steps, "ppo.async_rollout=true")
        per_s = lambda rows, wall: med([r["perf/samples"] / w for r, w in zip(rows, wall)])
        s, a = per_s(sync_rows, sync_wall), per_s(async_rows, async_wall)
        out[preset] = {"sync_samples_per_s": s, "async_samples_per_s": a, "speedup": a / s}
        line_plot([r["step"] for r in sync_rows], {
            "sync": [r["objective/reward"] for r in sync_rows],
            "async (one version behind)": [r["objective/reward"] for r in async_rows]},
            "PPO step", "reward per sample", f"Reward, sync vs async ({preset})", fx.root / f"async_reward_{preset}.png")
        out[preset]["reward_png"] = str(fx.root / f"async_reward_{preset}.png")
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
            group.train(batch, objective)  # warm-up
            t0 = time.perf_counter()
            for _ in range(2 if quick else 4):
                group.train(batch, objective)
            rates[name] = tokens * (2 if quick else 4) / (time.perf_counter() - t0)
        finally:
            group.shutdown()
    return {"padding_share": padded.padding_share, "packed_padding_share": packed.padding_share,
            "rows_padded": padded.ids.shape[0], "rows_packed": packed.ids.shape[0],
            "trainer_tokens_per_s": rates, "tokens_per_s_ratio": rates["packed"] / rates["padded"]}
