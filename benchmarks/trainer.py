"""`trainer`: a trainer step on the real chat model (SmolLM2-135M) in bf16 against fp32 at equal work, with LoRA
on the top 12 layers (every SmolLM2 job's setting; the headline `trainer.smollm2.bf16_over_fp32`) and fully
fine-tuned, and the gap between the engine's sampling logprobs and the trainer's in each dtype (what PPO's
ratio denominator absorbs)."""

from __future__ import annotations

from benchmarks.common import Fixture, interleave, med


def bench_trainer(fx: Fixture, quick: bool) -> dict:
    from hh_ray.algo.batch import SequenceBatch, TokenBatch
    from hh_ray.algo.ppo import logprob_gap
    from hh_ray.config import LoRAConfig, RolloutConfig, TrainerConfig
    from hh_ray.data.tokenize import encode_dialogue, load_tokenizer, truncate_prompt
    from hh_ray.models.forward import cpu_has_native_bf16
    from hh_ray.models.objectives import SFTObjective, TokenLogprobs
    from hh_ray.models.presets import resolve_pretrained
    from hh_ray.workers.rollout import RolloutGroup, Sampling
    from hh_ray.workers.trainer import TrainerGroup

    path = resolve_pretrained("smollm2-135m")
    tok = load_tokenizer(path)
    enc = [encode_dialogue(tok, c.chosen_dialogue, 256) for c in fx.items[:8]]
    batch = TokenBatch([e.input_ids for e in enc], [e.loss_mask for e in enc])
    out: dict = {"cpu_native_bf16": cpu_has_native_bf16(), "batch": "8 HH dialogues x up to 256 tokens"}
    for setting, lora in (("lora_top12", LoRAConfig(rank=16, alpha=32, top_layers=12)), ("full", LoRAConfig())):
        cfg = TrainerConfig(micro_batch_size=8, lr=1e-5, cpus_per_rank=2.0, lora=lora)
        groups = {d: TrainerGroup(f"bench-{setting}-{d}", path, "causal_lm", cfg, dtype=d)
                  for d in ("float32", "bfloat16")}
        for g in groups.values():
            g.train(batch, SFTObjective())  # warm-up: optimizer state, first-call allocations
        times = interleave({d: (lambda g=g: g.train(batch, SFTObjective()).seconds) for d, g in groups.items()},
                           2 if quick else 4)
        for g in groups.values():
            g.shutdown()
        out[setting] = {"fp32_step_s": med(times["float32"]), "bf16_step_s": med(times["bfloat16"]),
                        "bf16_over_fp32": med(times["float32"]) / med(times["bfloat16"])}
    prompts = [truncate_prompt(tok, p, 128) for p in fx.prompt_texts[:16]]
    for dtype in ("float32", "bfloat16"):
        rollout = RolloutGroup(path, RolloutConfig(kv_cache_gb=0.5), 256, name=f"bench-gap-{dtype}", dtype=dtype)
        trainer = TrainerGroup(f"bench-gap-trainer-{dtype}", path, "causal_lm", TrainerConfig(cpus_per_rank=1.0),
                               dtype=dtype)
        samples = rollout.generate(prompts, Sampling(max_new_tokens=48), seeds=list(range(len(prompts))))
        seqs = SequenceBatch(prompts, [s.response for s in samples])
        mean_gap, max_gap = logprob_gap(trainer.forward(seqs, TokenLogprobs()), [s.logprobs for s in samples])
        out[f"logprob_gap_{dtype}"] = {"mean": mean_gap, "max": max_gap,
                                       "tokens": sum(len(s.response) for s in samples)}
        rollout.shutdown()
        trainer.shutdown()
    return {"smollm2": out | {"bf16_over_fp32": out["lora_top12"]["bf16_over_fp32"]}}
