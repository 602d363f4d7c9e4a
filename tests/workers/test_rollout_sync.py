"""A real vLLM engine on CPU and a real DeepSpeed trainer: logprobs agree, weight sync moves the engine."""

from __future__ import annotations

import pytest
import ray

from hh_ray.config import RolloutConfig, TrainerConfig
from hh_ray.workers.rollout import RolloutGroup, Sampling, StaleWeightsError, connect_weight_sync, sync_weights
from hh_ray.workers.trainer import TrainerGroup


def _max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_engine_matches_trainer_before_and_after_sync(ray_local, tiny_model_dir, tokenizer, zero_stage):
    path = str(tiny_model_dir)
    rollout = RolloutGroup(path, RolloutConfig(kv_cache_gb=0.25), 256, name=f"rollout-z{zero_stage}")
    policy = TrainerGroup(f"policy-z{zero_stage}", path, "causal_lm",
                          TrainerConfig(num_ranks=2 if zero_stage == 3 else 1, zero_stage=zero_stage,
                                        micro_batch_size=2, lr=5e-3))
    try:
        prompts = [tokenizer(t)["input_ids"] for t in ("\n\nHuman: How do I bake bread?\n\nAssistant:",
                                                        "\n\nHuman: hi\n\nAssistant:")]
        out = rollout.generate(prompts, Sampling(max_new_tokens=12, n=2), seeds=[10, 20])
        assert len(out) == 4 and all(len(o["response"]) == len(o["logprobs"]) > 0 for o in out)
        pr = [prompts[i // 2] for i in range(4)]
        resp = [o["response"] for o in out]
        # the engine's sampling logprobs are the trainer's logprobs of the same tokens
        assert _max_diff(policy.infer("logprobs", pr, resp), [o["logprobs"] for o in out]) < 1e-3

        connect_weight_sync(policy, rollout)
        engine = rollout.engines[0]
        seqs = [p + r for p, r in zip(pr, resp)]
        starts = [len(p) for p in pr]
        before = ray.get(engine.prompt_logprobs.remote(seqs, starts))
        lp = policy.infer("logprobs", pr, resp)
        batch = {"prompt": pr, "response": resp, "old_logprobs": lp, "advantages": [[1.0] * len(r) for r in resp]}
        policy.train(batch, "policy", {"clip_ratio": 0.2})
        with pytest.raises(StaleWeightsError):  # the driver asked for v1 before syncing it
            ray.get(engine.generate.remote(prompts, Sampling(max_new_tokens=4), 1, [1, 2]))
        stats = sync_weights(policy, rollout, 1, 1 << 20)
        assert stats["sync_bytes"] == 4 * policy.num_parameters  # every fp32 parameter crossed, once
        assert 0 < stats["sync_load_seconds"] <= stats["sync_seconds"]
        assert ray.get(engine.policy_version.remote()) == 1
        after = ray.get(engine.prompt_logprobs.remote(seqs, starts))
        trainer_after = policy.infer("logprobs", pr, resp)
        assert _max_diff(after, trainer_after) < 1e-3
        assert _max_diff(after, before) > 1e-2  # the engine really serves new weights
        # the engine's prefix cache was reset: generating again uses the new weights, too
        out2 = rollout.generate(prompts, Sampling(max_new_tokens=12, n=2), seeds=[10, 20])
        lp2 = policy.infer("logprobs", pr, [o["response"] for o in out2])
        assert _max_diff(lp2, [o["logprobs"] for o in out2]) < 1e-3
        fixed = rollout.generate(prompts, Sampling(max_new_tokens=40, n=2, ignore_eos=True), seeds=[1, 2])
        assert [len(o["response"]) for o in fixed] == [40] * 4  # throughput runs get exactly the asked length
    finally:
        rollout.shutdown()
        policy.shutdown()
