"""Frozen-prefix reuse under top-layer LoRA: a training pass that starts from the states a probe recorded gives the
full model's logprobs, values and adapter gradients, and never runs the frozen layers."""

from __future__ import annotations

import pytest
import torch

from hh_ray.config import LoRAConfig
from hh_ray.models.forward import load_model, response_logprobs, response_values
from hh_ray.models.lora import add_lora
from hh_ray.models.prefix import FrozenPrefix, frozen_layers, recording, reusing


def test_frozen_layers_by_hand():
    assert frozen_layers(30, 16, 12, 0) == 18  # SmolLM2 with the jobs' adapters
    assert frozen_layers(30, 16, 0, 0) == 0  # adapters everywhere: the embedding's output already differs
    assert frozen_layers(30, 16, 30, 2) == 0
    assert frozen_layers(30, 0, 12, 0) == 0  # no LoRA: every weight trains
    assert frozen_layers(30, 16, 12, 3) == 0  # ZeRO-3 gathers layers through hooks: never cut there


def _batch():
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 17, 9, 30)]
    responses = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (6, 8, 3, 12)]
    return prompts, responses


def _adapted(path, kind):
    model = add_lora(load_model(path, kind), LoRAConfig(rank=4, alpha=8, top_layers=1), kind)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapters a real delta
            p.data.normal_(0, 0.05)
    return model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("kind", ["causal_lm", "value"])
def test_a_training_pass_from_recorded_states_equals_the_full_pass(tiny_model_dir, kind):
    model = _adapted(str(tiny_model_dir), kind)
    prompts, responses = _batch()
    prefix = FrozenPrefix(frozen_layers(model.config.num_hidden_layers, 4, 1, 0))
    assert prefix.first_trained == 1

    def out(ps, rs, pack_to=0):
        if kind == "causal_lm":
            return response_logprobs(model, ps, rs, 0, 0.7, pack_to=pack_to)[0]
        return response_values(model, ps, rs, 0, pack_to)[0]

    with torch.no_grad(), recording(prefix):  # the experience probe: all four samples, padded
        out(prompts, responses)
    assert len(prefix.states) == 4
    # a minibatch of three, in another order and packed into other rows, as PPO's epochs draw them
    pick = [3, 0, 2]
    ps, rs = [prompts[i] for i in pick], [responses[i] for i in pick]
    full = out(ps, rs, pack_to=40)
    full.sum().backward()
    expected = _grads(model)
    model.zero_grad()
    bottom_calls = []
    hook = model.get_decoder().layers[0].register_forward_hook(lambda *_: bottom_calls.append(1))
    with reusing(prefix):
        reused = out(ps, rs, pack_to=40)
    hook.remove()
    reused.sum().backward()
    assert bottom_calls == [] and prefix.reused == 3  # the frozen layer never ran
    assert (full - reused).abs().max() < 1e-5 and full.abs().sum() > 0
    got = _grads(model)
    assert expected.keys() == got.keys() and any("lora_" in n for n in got)
    assert all(torch.allclose(expected[n], got[n], atol=1e-6) for n in got)
    assert len(model.get_decoder().layers) == 2  # the model is whole again


def test_a_sample_never_recorded_runs_the_whole_model(tiny_model_dir):
    model = _adapted(str(tiny_model_dir), "causal_lm")
    prompts, responses = _batch()
    prefix = FrozenPrefix(1)
    with torch.no_grad(), recording(prefix):
        response_logprobs(model, prompts[:2], responses[:2], 0)
    with torch.no_grad():
        full = response_logprobs(model, prompts[1:3], responses[1:3], 0)[0]
        with reusing(prefix):
            mixed = response_logprobs(model, prompts[1:3], responses[1:3], 0)[0]
    assert prefix.reused == 0 and torch.equal(full, mixed)
    with torch.no_grad(), recording(prefix):  # a new probe replaces the states of the previous one
        response_logprobs(model, prompts[2:], responses[2:], 0)
    assert set(prefix.states) == {tuple(p + r) for p, r in zip(prompts[2:], responses[2:])}
