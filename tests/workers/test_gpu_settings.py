"""Trainer settings from the GPU work, run for real on CPU DeepSpeed ranks: forward passes cut by a token budget
(ZeRO-3 ranks kept in step), gradient checkpointing, ZeRO-3 prefetch in the DeepSpeed config, and checkpoint
completeness checked against the files DeepSpeed actually wrote."""

from __future__ import annotations

import random

import pytest
import torch

from hh_ray.algo.batch import PolicyBatch, SequenceBatch
from hh_ray.config import TrainerConfig
from hh_ray.models.objectives import PolicyObjective, TokenLogprobs
from hh_ray.workers.checkpoint import expected_checkpoint_files, missing_checkpoint_files
from hh_ray.workers.trainer import TrainerGroup, ds_config


def test_ds_config_takes_zero3_prefetch_and_persistence_from_the_config():
    z = ds_config(TrainerConfig(zero_stage=3), 2, torch.bfloat16)["zero_optimization"]
    assert z["stage3_prefetch_bucket_size"] == 50_000_000 and z["stage3_param_persistence_threshold"] == 100_000
    assert z["stage3_max_live_parameters"] == 1_000_000_000
    z = ds_config(TrainerConfig(zero_stage=3, zero3_prefetch_bucket_size=0), 2, torch.bfloat16)["zero_optimization"]
    assert z["stage3_prefetch_bucket_size"] == 0
    zero2 = ds_config(TrainerConfig(zero_stage=2), 2, torch.float32)["zero_optimization"]
    assert "stage3_prefetch_bucket_size" not in zero2


def test_expected_checkpoint_files_by_stage():
    assert expected_checkpoint_files(2, 0, bf16=False) == ["mp_rank_00_model_states.pt"]
    assert expected_checkpoint_files(2, 2, bf16=False) == [
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    z3 = expected_checkpoint_files(2, 3, bf16=True)
    assert z3[:2] == ["zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"]
    assert z3[2][0] == "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _samples(n: int, seed: int = 0):
    rng = random.Random(seed)
    prompts = [[rng.randrange(10, 4000) for _ in range(rng.randrange(8, 40))] for _ in range(n)]
    responses = [[rng.randrange(10, 4000) for _ in range(rng.randrange(4, 24))] for _ in range(n)]
    # long samples first: the first rank's shard needs more micro batches than the second's
    order = sorted(range(n), key=lambda i: -(len(prompts[i]) + len(responses[i])))
    return [prompts[i] for i in order], [responses[i] for i in order]


@pytest.mark.slow  # kept out of the default suite for time; run with -m slow
def test_zero3_token_budget_forwards_match_one_forward_and_checkpoint_is_complete(ray_local, tiny_model_dir,
                                                                                  tmp_path):
    from hh_ray.data.tokenize import load_tokenizer
    from hh_ray.models.forward import load_model, response_logprobs

    prompts, responses = _samples(12)
    cfg = TrainerConfig(num_ranks=2, zero_stage=3, micro_batch_size=2, forward_token_budget=96, cpus_per_rank=0.5)
    group = TrainerGroup("budget-z3", str(tiny_model_dir), "causal_lm", cfg)
    try:
        # unequal forward counts would leave one rank waiting in an all-gather forever
        got = group.forward(SequenceBatch(prompts, responses), TokenLogprobs())
        model = load_model(str(tiny_model_dir), "causal_lm").eval()
        with torch.no_grad():
            want, _, _ = response_logprobs(model, prompts, responses, load_tokenizer(tiny_model_dir).pad_token_id)
        assert [len(r) for r in got] == [len(r) for r in responses]
        for row, ref, r in zip(got, want, responses):
            assert torch.allclose(torch.tensor(row), ref[: len(r)], atol=1e-4)
        # one sample for two ranks: the rank with an empty shard runs a placeholder forward to keep in step
        (alone,) = group.forward(SequenceBatch(prompts[:1], responses[:1]), TokenLogprobs())
        assert torch.allclose(torch.tensor(alone), want[0][: len(responses[0])], atol=1e-4)

        group.save_checkpoint(str(tmp_path), "step1", {"step": 1})
        folder = tmp_path / "step1"
        assert missing_checkpoint_files(folder, 2, 3) == [] and (folder / "COMPLETE").is_file()
        (folder / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()  # a shard that went to another disk
        assert missing_checkpoint_files(folder, 2, 3) == ["zero_pp_rank_1_mp_rank_00_model_states.pt"]
    finally:
        group.shutdown()


@pytest.mark.slow  # kept out of the default suite for time; run with -m slow
def test_gradient_checkpointing_is_applied_and_changes_nothing_but_memory(ray_local, tiny_model_dir):
    prompts, responses = _samples(4, seed=1)
    batch = PolicyBatch(prompts, responses, [[-8.0] * len(r) for r in responses],
                        [[1.0 if i % 2 else -1.0] * len(r) for i, r in enumerate(responses)])
    out = {}
    for ckpt in (False, True):
        g = TrainerGroup(f"gc-{int(ckpt)}", str(tiny_model_dir), "causal_lm",
                         TrainerConfig(micro_batch_size=4, lr=1e-3, gradient_checkpointing=ckpt))
        try:
            assert g.gradient_checkpointing is ckpt
            out[ckpt] = (g.train(batch, PolicyObjective()).loss, g.param_vector())
        finally:
            g.shutdown()
    assert out[True][0] == pytest.approx(out[False][0], abs=1e-6)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-6)
