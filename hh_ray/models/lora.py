"""LoRA (peft) on a trainer's model, and the plain weights it stands for: what engines load and exports save.

Adapters make a 135M model trainable on two CPU cores: the frozen base runs forward (and backward only through
the adapted layers), and the optimizer state is a few MB. Engines never see adapters: every sync and export merges
W + B A * alpha / r into the weight it belongs to, under the plain model's parameter name, so vLLM's own loader and
`from_pretrained` take the result as any other checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:
    from hh_ray.config import LoRAConfig

HEADS = ("score", "classifier")  # the scalar heads of HF sequence/token classification models (new, so trained)


def add_lora(model, lora_cfg: LoRAConfig, kind: str):
    """Wrap `model` with adapters per `lora_cfg` (a config.LoRAConfig); a PM's or critic's new head trains whole."""
    from peft import LoraConfig, get_peft_model

    n = model.config.num_hidden_layers
    top = lora_cfg.top_layers
    peft_cfg = LoraConfig(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=list(lora_cfg.target_modules),
                          layers_to_transform=list(range(n - top, n)) if 0 < top < n else None)
    wrapped = get_peft_model(model, peft_cfg)
    if kind != "causal_lm":
        heads = [getattr(model, h) for h in HEADS if hasattr(model, h)]
        if not heads:
            raise ValueError(f"{type(model).__name__} has no scalar head named {' or '.join(HEADS)} to train")
        heads[0].requires_grad_(True)
    return wrapped


def is_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def plain_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter as the plain HF model names and holds it.

    Without adapters these are the model's own parameters (so ZeRO-3 can gather them). With adapters each adapted
    weight is W + delta, added in float32 and rounded once to W's dtype (closest to what the trainer computes).
    """
    if not is_lora(model):
        yield from model.named_parameters()
        return
    base = model.get_base_model()
    for name, p in base.named_parameters():
        if ".lora_" in name:
            continue
        if ".base_layer." not in name:
            yield name, p.detach()
            continue
        owner, leaf = name.split(".base_layer.")
        layer = base.get_submodule(owner)
        if leaf == "weight":
            delta = sum(layer.get_delta_weight(adapter).float() for adapter in layer.active_adapters)
            yield f"{owner}.weight", (p.detach().float() + delta).to(p.dtype)  # out of place: W stays as it is
        else:
            yield f"{owner}.{leaf}", p.detach()

