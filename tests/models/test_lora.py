"""LoRA adapters and the plain weights they stand for: merging is exact, and only adapters (and new heads) train."""

from __future__ import annotations

import torch

from hh_ray.config import LoRAConfig
from hh_ray.models.forward import load_model
from hh_ray.models.lora import add_lora, is_lora, plain_weights


def _nudge_adapters(model) -> None:
    """peft starts B at zero (the adapted model equals the base); give every adapter a non-zero delta."""
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)


def test_merged_weights_reproduce_the_adapted_model(tiny_model_dir):
    path = str(tiny_model_dir)
    model = add_lora(load_model(path, "causal_lm"), LoRAConfig(rank=4, alpha=8), "causal_lm")
    _nudge_adapters(model)
    ids = torch.randint(3, 500, (2, 12))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        plain = load_model(path, "causal_lm")
        names = dict(plain.named_parameters())
        merged = dict(plain_weights(model))
        assert set(merged) == set(names)  # plain HF names, one tensor each: what engines and exports load
        plain.load_state_dict(merged)
        assert torch.allclose(plain(input_ids=ids).logits, adapted, atol=1e-5)
        # merging reads the adapted model and leaves it as it was: a second merge gives the same weights
        assert torch.equal(model(input_ids=ids).logits, adapted)
        assert all(torch.equal(t, merged[n]) for n, t in plain_weights(model))
        base = load_model(path, "causal_lm")(input_ids=ids).logits
    assert (adapted - base).abs().max() > 1e-3  # the adapters really changed the model


def test_only_adapters_and_the_new_head_train(tiny_model_dir):
    model = add_lora(load_model(str(tiny_model_dir), "pm"), LoRAConfig(rank=4, top_layers=1), "pm")
    assert is_lora(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.endswith("score.weight") for n in trainable)
    assert all("lora_" in n or n.endswith("score.weight") for n in trainable)
    # top_layers=1 of the tiny preset's 2: adapters only in the last layer, so backward stops there
    assert all(".layers.1." in n for n in trainable if "lora_" in n)
    assert trainable and all(not p.requires_grad for n, p in model.named_parameters() if ".layers.0." in n)
