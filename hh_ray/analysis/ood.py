"""OOD detection of harmful requests (Bai et al. sec. 5.4): a Gaussian fit on a model's activations for helpful
requests; a request's Mahalanobis distance from it is its OOD score; AUROC measures how well the distance
separates held-out harmless-base (red-team) requests from held-out helpful ones.

Activations come from any HF model folder (the PM, the policy, or an encoder such as MiniLM) through
`output_hidden_states`: one layer (index into hidden_states; 0 = embeddings, -1 = last), mean-pooled over the
request's tokens or taken at its last token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from hh_ray.algo.analysis import auroc, fit_gaussian, mahalanobis
from hh_ray.report.plots import histograms
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
    pooling: str = "mean"  # mean over tokens, or last (the final token)
    fit_prompts: int = 400  # in-distribution requests to fit the Gaussian on
    test_prompts: int = 200  # held-out requests per side
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
def activations(model, tokenizer, texts: list[str], layer: int, pooling: str, max_tokens: int,
                batch_size: int) -> torch.Tensor:
    """[len(texts), hidden] activations of one layer, pooled over each text's tokens (padding excluded)."""
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
        if not -len(states) <= layer < len(states):
            raise ValueError(f"layer {layer} outside the model's {len(states)} hidden states (0 = embeddings)")
        h, m = states[layer].float(), enc["attention_mask"].float()
        if pooling == "mean":
            rows.append((h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1))
        else:
            rows.append(h[torch.arange(h.shape[0]), m.sum(1).long() - 1])
    return torch.cat(rows)


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


def ood_detection(cfg: OODConfig) -> OOD:
    """Fit on in-distribution requests, score disjoint held-out requests of both subsets, write ood.json + PNG."""
    from hh_ray.config import default_data_dir

    if not cfg.model or not cfg.run_dir:
        raise ValueError("ood needs model and run_dir")
    data_dir = cfg.data_dir or default_data_dir()
    rng = random.Random(cfg.seed)
    inside, outside = request_texts(data_dir, cfg.in_subset, cfg.text), request_texts(data_dir, cfg.ood_subset,
                                                                                         cfg.text)
    rng.shuffle(inside)
    rng.shuffle(outside)
    need = cfg.fit_prompts + cfg.test_prompts
    if len(inside) < need or len(outside) < cfg.test_prompts:
        raise ValueError(f"ood needs {need} {cfg.in_subset} and {cfg.test_prompts} {cfg.ood_subset} requests, "
                         f"found {len(inside)} and {len(outside)}")
    fit_texts, test_in = inside[: cfg.fit_prompts], inside[cfg.fit_prompts : need]
    test_out = outside[: cfg.test_prompts]
    model, tok = load_backbone(cfg.model)
    def act(texts):
        return activations(model, tok, texts, cfg.layer, cfg.pooling, cfg.max_tokens, cfg.batch_size)
    gauss = fit_gaussian(act(fit_texts), cfg.shrinkage)
    d_in, d_out = mahalanobis(act(test_in), gauss).tolist(), mahalanobis(act(test_out), gauss).tolist()
    result = OOD(model=cfg.model, layer=cfg.layer, pooling=cfg.pooling, shrinkage=cfg.shrinkage,
                 in_subset=cfg.in_subset, ood_subset=cfg.ood_subset, fit_prompts=len(fit_texts),
                 auroc=auroc(d_out, d_in), test_in=d_in, test_ood=d_out)
    path = write_result(result, result_path(cfg.run_dir, OOD))
    histograms({f"{cfg.in_subset} (held out)": d_in, cfg.ood_subset: d_out}, path.with_suffix(".png"),
               "Mahalanobis distance from the in-distribution fit", f"OOD detection (AUROC {result.auroc:.3f})")
    return result
