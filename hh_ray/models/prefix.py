"""Frozen-prefix reuse under top-layer LoRA.

With adapters on the top k of n decoder layers only, nothing below layer n - k ever trains: the hidden state that
enters that layer is a function of the tokens alone for the whole run. A trainer records it per sample while it
runs a probe (PPO's experience pass, over the very samples it then trains on) and its PPO epochs start from it,
running k layers instead of n (12 of SmolLM2's 30: each training forward 40% as long; the backward never went
below the adapters anyway). A sample not recorded is run whole, so reuse never changes what is computed.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hh_ray.models.forward import Layout


@dataclass
class FrozenPrefix:
    """The hidden states entering layer `first_trained` of the samples of a trainer's latest probe."""

    first_trained: int
    states: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict)
    reused: int = 0  # samples whose training forward started from a recorded state


_ACTIVE: ContextVar[tuple[FrozenPrefix, bool] | None] = ContextVar("frozen_prefix", default=None)


def frozen_layers(num_layers: int, lora_rank: int, top_layers: int, zero_stage: int) -> int:
    """How many bottom layers never train (0: reuse is off). Only adapters on the top layers freeze a prefix;
    ZeRO-3 gathers each layer's weights through hooks, so the model is never cut there."""
    if lora_rank and 0 < top_layers < num_layers and zero_stage < 3:
        return num_layers - top_layers
    return 0


@contextmanager
def recording(prefix: FrozenPrefix | None):
    """Forward passes inside record each sample's state (the previous probe's are dropped)."""
    if prefix is None:
        yield
        return
    prefix.states.clear()
    token = _ACTIVE.set((prefix, True))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextmanager
def reusing(prefix: FrozenPrefix | None):
    """Forward passes inside start from the recorded states where every sample of the pass has one."""
    token = _ACTIVE.set((prefix, False) if prefix is not None else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextmanager
def _top_layers_only(decoder, first: int):
    layers = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(layers)[first:])
    try:
        yield
    finally:
        decoder.layers = layers


def run_backbone(call, decoder, lay: Layout, **kwargs):
    """`call(input_ids=lay.ids, **lay.model_kwargs, **kwargs)` (a model or its decoder), recording or reusing
    frozen-prefix states of the layout's samples; the decoder's `layers` are the model's."""
    ids, spans = lay.ids, lay.spans
    kwargs |= lay.model_kwargs
    active = _ACTIVE.get()
    if active is None:
        return call(input_ids=ids, **kwargs)
    prefix, record = active
    keys = [tuple(s) for s in lay.seqs]
    if record:
        seen: list[torch.Tensor] = []
        hook = decoder.layers[prefix.first_trained].register_forward_pre_hook(
            lambda _, args, kw: seen.append(args[0] if args else kw["hidden_states"]), with_kwargs=True)
        try:
            out = call(input_ids=ids, **kwargs)
        finally:
            hook.remove()
        hidden = seen[0].detach()
        for key, (row, start, n) in zip(keys, spans):
            prefix.states[key] = hidden[row, start:start + n].clone()
        return out
    if not keys or any(k not in prefix.states for k in keys):
        return call(input_ids=ids, **kwargs)
    first = prefix.states[keys[0]]
    embeds = torch.zeros(*ids.shape, first.shape[-1], dtype=first.dtype, device=ids.device)
    for key, (row, start, n) in zip(keys, spans):
        embeds[row, start:start + n] = prefix.states[key]
    with _top_layers_only(decoder, prefix.first_trained):
        out = call(inputs_embeds=embeds, **kwargs)
    prefix.reused += len(keys)
    return out
