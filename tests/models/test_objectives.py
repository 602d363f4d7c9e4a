"""Objectives against their textbook form on a real (tiny) model: the shortcuts they take change no number."""

from __future__ import annotations

import torch

from hh_ray.algo.batch import TokenBatch
from hh_ray.config import LoRAConfig
from hh_ray.models.forward import load_model
from hh_ray.models.lora import add_lora
from hh_ray.models.objectives import SFTObjective


def test_sft_loss_on_masked_positions_only_equals_the_full_cross_entropy(tiny_model_dir):
    model = add_lora(load_model(str(tiny_model_dir), "causal_lm"), LoRAConfig(rank=4, alpha=8), "causal_lm")
    torch.manual_seed(0)
    seqs = [torch.randint(3, 500, (n,)).tolist() for n in (9, 14, 5)]
    masks = [[0] * 4 + [1] * 5, [0] * 3 + [1] * 4 + [0] * 3 + [1] * 4, [0, 0, 0, 0, 0]]  # two answers, none
    loss, _ = SFTObjective().loss(model, TokenBatch(seqs, masks), pad_id=0)
    want = 0.0
    for ids, mask in zip(seqs, masks):
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        want = want + (nll * torch.tensor(mask[1:], dtype=torch.float32)).sum()
    assert torch.allclose(loss, want, rtol=1e-5)
    loss.backward()  # gradients reach the adapters through the picked positions
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
