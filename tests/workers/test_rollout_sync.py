"""A real vLLM engine on CPU and a real DeepSpeed trainer: logprobs agree, weight sync moves the engine."""

from __future__ import annotations

import pytest
import ray

from hh_ray.algo.batch import PolicyBatch, PromptBatch, SequenceBatch
from hh_ray.algo.ppo import logprob_gap
from hh_ray.config import RolloutConfig, TrainerConfig
from hh_ray.models.objectives import PolicyObjective, TokenLogprobs
from hh_ray.workers.rollout import RolloutGroup, Sampling, StaleWeightsError
from hh_ray.workers.trainer import TrainerGroup

QUESTIONS = ("\n\nHuman: How do I bake bread?\n\nAssistant:", "\n\nHuman: hi\n\nAssistant:")


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_engine_matches_trainer_before_and_after_sync(ray_local, tiny_model_dir, tokenizer, zero_stage):
    path = str(tiny_model_dir)
    rollout = RolloutGroup(path, RolloutConfig(kv_cache_gb=0.25), 256, name=f"rollout-z{zero_stage}")
    policy = TrainerGroup(f"policy-z{zero_stage}", path, "causal_lm",
                          TrainerConfig(num_ranks=2 if zero_stage == 3 else 1, zero_stage=zero_stage,
                                        micro_batch_size=2, lr=5e-3))
    try:
        prompts = [tokenizer(t)["input_ids"] for t in QUESTIONS]
        out = rollout.generate(prompts, Sampling(max_new_tokens=12, n=2), seeds=[10, 20])
        assert len(out) == 4 and all(len(o.response) == len(o.logprobs) > 0 for o in out)
        seqs = SequenceBatch([prompts[i // 2] for i in range(4)], [o.response for o in out])
        # the engine's sampling logprobs are the trainer's logprobs of the same tokens
        mean_gap, max_gap = logprob_gap(policy.forward(seqs, TokenLogprobs()), [o.logprobs for o in out])
        assert max_gap < 1e-3 and mean_gap < 1e-3

        rollout.connect(policy, 1 << 20, timeout_s=60)
        engine = rollout.engines[0]
        full = [p + r for p, r in zip(seqs.prompt, seqs.response)]
        starts = [len(p) for p in seqs.prompt]
        before = ray.get(engine.prompt_logprobs.remote(full, starts))
        lp = policy.forward(seqs, TokenLogprobs())
        policy.train(PolicyBatch(seqs.prompt, seqs.response, lp, [[1.0] * len(r) for r in seqs.response]),
                     PolicyObjective())
        with pytest.raises(StaleWeightsError):  # the driver asked for v1 before syncing it
            ray.get(engine.generate.remote(PromptBatch(prompts, [1, 2]), Sampling(max_new_tokens=4), 1))
        stats = rollout.ensure(1)
        assert stats.bytes == 4 * policy.num_parameters  # every fp32 parameter crossed, once
        assert 0 < stats.load_seconds <= stats.seconds
        assert ray.get(engine.policy_version.remote()) == 1
        after = ray.get(engine.prompt_logprobs.remote(full, starts))
        assert logprob_gap(after, policy.forward(seqs, TokenLogprobs()))[1] < 1e-3
        assert logprob_gap(after, before)[1] > 1e-2  # the engine really serves new weights
        # the engine's prefix cache was reset: generating again uses the new weights, too
        out2 = rollout.generate(prompts, Sampling(max_new_tokens=12, n=2), seeds=[10, 20])
        lp2 = policy.forward(SequenceBatch(seqs.prompt, [o.response for o in out2]), TokenLogprobs())
        assert logprob_gap(lp2, [o.logprobs for o in out2])[1] < 1e-3
        fixed = rollout.generate(prompts, Sampling(max_new_tokens=40, n=2, ignore_eos=True), seeds=[1, 2])
        assert [len(o.response) for o in fixed] == [40] * 4  # throughput runs get exactly the asked length
        assert {o.finish for o in fixed} == {"length"}
    finally:
        rollout.shutdown()
        policy.shutdown()


def test_gap_detects_a_mismatched_engine_and_sync_survives_a_dead_engine(ray_local, tiny_model_dir, tokenizer):
    """An engine sampling at another temperature than the trainer assumes shows up in the logprob gap; a dead
    engine leaves the sync group, which the next push rebuilds, and a replacement engine gets the weights once."""
    path = str(tiny_model_dir)
    rollout = RolloutGroup(path, RolloutConfig(num_engines=2, max_engines=2, kv_cache_gb=0.25), 256, name="rollout-gap")
    policy = TrainerGroup("policy-gap", path, "causal_lm", TrainerConfig(micro_batch_size=2, lr=5e-3))
    try:
        prompts = [tokenizer(t)["input_ids"] for t in QUESTIONS]
        out = rollout.generate(prompts, Sampling(temperature=0.7, max_new_tokens=16, n=2), seeds=[3, 4])
        seqs = SequenceBatch([prompts[i // 2] for i in range(4)], [o.response for o in out])
        mean_gap, _ = logprob_gap([o.logprobs for o in out], policy.forward(seqs, TokenLogprobs(temperature=1.0)))
        assert mean_gap > 0.05, mean_gap  # the trainer is told 1.0: the gap metric exposes the mismatch
        assert logprob_gap([o.logprobs for o in out], policy.forward(seqs, TokenLogprobs(0.7)))[0] < 1e-3

        rollout.connect(policy, 1 << 20, timeout_s=120)  # a replaced engine joins slowly under load
        rollout.ensure(1)
        dead = rollout.engines[0]
        ray.kill(dead)
        out = rollout.generate(prompts * 4, Sampling(max_new_tokens=8), list(range(8)))
        assert len(out) == 8 and len(rollout.engines) == 1  # its prompts were re-queued to the survivor
        # a replacement engine first, then one push over a group rebuilt without the dead engine
        assert rollout.ensure(2).bytes == 4 * policy.num_parameters and len(rollout.engines) == 2
        assert rollout.ensure(2) is None  # every engine holds it: no second push
        assert ray.get([e.policy_version.remote() for e in rollout.engines]) == [2, 2]
        sums = ray.get([e.weight_sum.remote() for e in rollout.engines])
        assert abs(sums[0] - sums[1]) < 1e-6
    finally:
        rollout.shutdown()
        policy.shutdown()


def test_lora_policy_syncs_merged_weights_and_exports_them(ray_local, tiny_model_dir, tokenizer, tmp_path):
    """A LoRA-trained policy: the engines receive W + BA under the plain names, so after a step and a push the
    engine's logprobs equal the trainer's (fp32: 1e-3); the HF export loads as a plain model that agrees too."""
    from hh_ray.config import LoRAConfig
    from hh_ray.models.forward import load_model, response_logprobs

    path = str(tiny_model_dir)
    rollout = RolloutGroup(path, RolloutConfig(kv_cache_gb=0.25), 256, name="rollout-lora")
    policy = TrainerGroup("policy-lora", path, "causal_lm",
                          TrainerConfig(micro_batch_size=2, lr=2e-2, lora=LoRAConfig(rank=8, alpha=16)))
    try:
        assert 0 < policy.trainable_parameters < policy.num_parameters / 5
        prompts = [tokenizer(t)["input_ids"] for t in QUESTIONS]
        out = rollout.generate(prompts, Sampling(max_new_tokens=12, n=2), seeds=[10, 20])
        seqs = SequenceBatch([prompts[i // 2] for i in range(4)], [o.response for o in out])
        lp = policy.forward(seqs, TokenLogprobs())
        for _ in range(2):  # B starts at zero: the second step moves the adapted weights
            policy.train(PolicyBatch(seqs.prompt, seqs.response, lp, [[1.0] * len(r) for r in seqs.response]),
                         PolicyObjective())
        rollout.connect(policy, 1 << 20, timeout_s=60)
        stats = rollout.ensure(1)
        assert stats.bytes == 4 * policy.num_parameters - 4 * policy.trainable_parameters  # plain weights only
        engine = rollout.engines[0]
        full = [p + r for p, r in zip(seqs.prompt, seqs.response)]
        after = ray.get(engine.prompt_logprobs.remote(full, [len(p) for p in seqs.prompt]))
        trained = policy.forward(seqs, TokenLogprobs())
        policy.export_hf(str(tmp_path / "export"))
        plain = load_model(str(tmp_path / "export"), "causal_lm")
        exported, _, _ = response_logprobs(plain, seqs.prompt, seqs.response, tokenizer.pad_token_id)
        exported = [row[: len(r)].tolist() for row, r in zip(exported, seqs.response)]
        assert logprob_gap(exported, trained)[1] < 1e-4
        assert logprob_gap(after, trained)[1] < 1e-3
        assert logprob_gap(trained, lp)[1] > 1e-2  # the adapters really moved the policy
    finally:
        rollout.shutdown()
        policy.shutdown()
