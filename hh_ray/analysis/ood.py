"""OOD detection of harmful requests (Bai et al. sec. 5.4): a Gaussian fit on a model's activations for helpful
requests; a request's Mahalanobis distance from it is its OOD score; AUROC measures how well the distance
separates held-out harmless-base (red-team) requests from held-out helpful ones.

Activations come from any HF model folder (the PM, the policy, or an encoder such as MiniLM) through
`output_hidden_states`: one layer (index into hidden_states; 0 = embeddings, -1 = last), mean-pooled over the
request's tokens or taken at its last token. Given several layers, one forward pass pools them all; the layer
reported is the one with the best AUROC on a validation split, and its AUROC is measured on a disjoint test
split, so the choice does not flatter the figure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hh_ray.algo.analysis import auroc, auroc_se, fit_gaussian, mahalanobis
from hh_ray.report.plots import histograms, line_plot
from hh_ray.report.results import OOD, result_path, write_result


@dataclass
class OODConfig:
    """`hh-ray ood`: model, layer, pooling, which subsets are in- and out-of-distribution, how many requests."""

    model: str = ""  # HF folder (PM, policy export, encoder); the CLI resolves all-MiniLM-L6-v2 to its folder
    run_dir: str = ""  # the result goes to <run_dir>/analysis/ood.json
    data_dir: str = ""  # HH layout; empty = the default data folder
    in_subset: str = "helpful-base"
    ood_subset: str = "harmless-base"
    text: str = "first_turn"  # first_turn: the human's opening request; prompt: the whole dialogue so far
    layer: int = -1
    layers: list[int] = field(default_factory=list)  # several: the best on the validation split is reported
    pooling: str = "mean"  # mean over tokens, or last (the final token)
    fit_prompts: int = 400  # in-distribution requests to fit the Gaussian on
    test_prompts: int = 200  # held-out requests per side
    val_prompts: int = 100  # requests per side that choose the layer when `layers` names several
    shrinkage: float = 0.1
    max_tokens: int = 128
    batch_size: int = 16
    seed: int = 0


def request_texts(data_dir: str, subset: str, text: str) -> list[str]:
    """Distinct requests of a subset, in file order: each prompt's first human turn, or the whole prompt."""
    from hh_ray.data.hh import load_comparisons, split_turns, unique_prompts

    if text not in ("first_turn", "prompt"):
        raise ValueError(f"ood text must be 'first_turn' or 'prompt', got '{text}'")
    items, _ = load_comparisons(data_dir, [subset])
    prompts = unique_prompts(items)
    if text == "prompt":
        return prompts
    firsts = [next((t for role, t in split_turns(p) if role == "Human"), "").strip() for p in prompts]
    return list(dict.fromkeys(t for t in firsts if t))


@torch.no_grad()
def activations(model, tokenizer, texts: list[str], layers: list[int], pooling: str, max_tokens: int,
                batch_size: int) -> torch.Tensor:
    """[len(layers), len(texts), hidden] activations, each layer pooled over each text's tokens (padding
    excluded); one forward pass serves every layer."""
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last', got '{pooling}'")
    tokenizer.padding_side = "right"
    rows = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_tokens)
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True,
                    use_cache=False)
        states = out.hidden_states
        bad = [k for k in layers if not -len(states) <= k < len(states)]
        if bad:
            raise ValueError(f"layer {bad[0]} outside the model's {len(states)} hidden states (0 = embeddings)")
        h, m = torch.stack([states[k] for k in layers]).float(), enc["attention_mask"].float()
        if pooling == "mean":
            rows.append((h * m[None, ..., None]).sum(2) / m.sum(1, keepdim=True).clamp_min(1))
        else:
            rows.append(h[:, torch.arange(h.shape[1]), m.sum(1).long() - 1])
    return torch.cat(rows, dim=1)


def layer_aurocs(fit: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor, shrinkage: float
                 ) -> list[tuple[float, list[float], list[float]]]:
    """Per layer ([L, n, d] inputs): (AUROC, in-distribution distances, OOD distances) of a Gaussian fit."""
    out = []
    for f, a, b in zip(fit, inside, outside):
        gauss = fit_gaussian(f, shrinkage)
        d_in, d_out = mahalanobis(a, gauss).tolist(), mahalanobis(b, gauss).tolist()
        out.append((auroc(d_out, d_in), d_in, d_out))
    return out


def load_backbone(path: str):
    """Model and tokenizer from an HF folder; the bare backbone (no head) for an encoder, the LM otherwise."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from hh_ray.data.tokenize import load_tokenizer

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"no HF model at {path} (config.json missing)")
    config = AutoConfig.from_pretrained(path)
    causal = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(path, dtype=torch.float32)
    return model.eval(), load_tokenizer(path)


def _split_requests(cfg: OODConfig, data_dir: str, sweep: bool) -> tuple[list[str], ...]:
    """(fit, validation in, validation OOD, test in, test OOD) requests, disjoint, shuffled by the seed."""
    rng = random.Random(cfg.seed)
    inside, outside = request_texts(data_dir, cfg.in_subset, cfg.text), request_texts(data_dir, cfg.ood_subset,
                                                                                         cfg.text)
    rng.shuffle(inside)
    rng.shuffle(outside)
    val = cfg.val_prompts if sweep else 0
    need_in, need_out = cfg.fit_prompts + val + cfg.test_prompts, val + cfg.test_prompts
    if len(inside) < need_in or len(outside) < need_out:
        raise ValueError(f"ood needs {need_in} {cfg.in_subset} and {need_out} {cfg.ood_subset} requests, "
                         f"found {len(inside)} and {len(outside)}")
    fit, rest = inside[: cfg.fit_prompts], inside[cfg.fit_prompts : need_in]
    return fit, rest[:val], outside[:val], rest[val:], outside[val:need_out]


def ood_detection(cfg: OODConfig) -> OOD:
    """Fit on in-distribution requests, score disjoint held-out requests of both subsets, write ood.json + PNG
    (and, sweeping layers, ood_layers.png: AUROC by layer on the validation and test splits)."""
    from hh_ray.config import default_data_dir

    if not cfg.model or not cfg.run_dir:
        raise ValueError("ood needs model and run_dir")
    layers = list(dict.fromkeys(cfg.layers)) or [cfg.layer]
    sweep = len(layers) > 1
    if sweep and cfg.val_prompts < 2:
        raise ValueError(f"choosing among layers {layers} needs val_prompts >= 2, got {cfg.val_prompts}")
    fit_texts, val_in, val_out, test_in, test_out = _split_requests(cfg, cfg.data_dir or default_data_dir(), sweep)
    model, tok = load_backbone(cfg.model)
    def act(texts):
        return activations(model, tok, texts, layers, cfg.pooling, cfg.max_tokens, cfg.batch_size)
    fit = act(fit_texts)
    test = layer_aurocs(fit, act(test_in), act(test_out), cfg.shrinkage)
    val = layer_aurocs(fit, act(val_in), act(val_out), cfg.shrinkage) if sweep else test
    best = max(range(len(layers)), key=lambda k: val[k][0])
    a, d_in, d_out = test[best]
    result = OOD(model=cfg.model, layer=layers[best], pooling=cfg.pooling, shrinkage=cfg.shrinkage,
                 in_subset=cfg.in_subset, ood_subset=cfg.ood_subset, fit_prompts=len(fit_texts), auroc=a,
                 test_in=d_in, test_ood=d_out, auroc_se=auroc_se(a, len(d_out), len(d_in)),
                 layers=layers if sweep else [], val_prompts=len(val_in) if sweep else 0,
                 val_auroc=[v[0] for v in val] if sweep else [], test_auroc=[t[0] for t in test] if sweep else [])
    path = write_result(result, result_path(cfg.run_dir, OOD))
    histograms({f"{cfg.in_subset} (held out)": d_in, cfg.ood_subset: d_out}, path.with_suffix(".png"),
               "Mahalanobis distance from the in-distribution fit",
               f"OOD detection, layer {result.layer} (AUROC {result.auroc:.3f})")
    if sweep:
        line_plot(layers, {"validation": result.val_auroc, "test": result.test_auroc}, "layer (0 = embeddings)",
                  "AUROC", "OOD detection by layer", path.with_name("ood_layers.png"))
    return result
