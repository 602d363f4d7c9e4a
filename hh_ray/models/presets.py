"""Model presets built offline (random init) and the one way every model is loaded: `from_pretrained`.

A preset is a Llama-style decoder sized for CPU work. `tiny` keeps head_dim at 32, the least the vLLM CPU
engine accepts. Real runs name any HF model id or local path instead; nothing else changes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PRESETS = {
    # ~2.6M parameters (2.1M of them embeddings with the 8k vocab)
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=256),
    # ~34M parameters
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                  intermediate_size=1408),
    # ~98M parameters: GPT-2-small width and depth, for benchmarks that need a model of realistic size
    "medium": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                   intermediate_size=2048),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def build_preset(name: str, tokenizer, out_dir: str | Path, seed: int = 0, max_positions: int = 1024) -> Path:
    """Random-init a preset for `tokenizer`, save model and tokenizer together (vLLM loads the folder)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
    cfg = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=max_positions,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                      tie_word_embeddings=False, torch_dtype="float32", **PRESETS[name])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    out = Path(out_dir)
    save_atomic(model, tokenizer, out)
    return out


def save_atomic(model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> None:
    """`save_pretrained` into a temp folder, then rename: a crash never leaves a half-written model folder."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp), state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def ensure_tokenizer(out_dir: str | Path, texts_fn, vocab_size: int):
    """The run's offline BPE tokenizer: loaded if already trained, else trained on `texts_fn()` and saved."""
    from hh_ray.data.tokenize import load_tokenizer, train_tokenizer

    out = Path(out_dir)
    if (out / "tokenizer.json").is_file():
        return load_tokenizer(out)
    tmp = out.with_name(out.name + ".tmp")
    train_tokenizer(texts_fn(), vocab_size, tmp)
    os.replace(tmp, out)
    return load_tokenizer(out)


def check_model(name: str, key: str = "model.policy") -> str:
    """`name` if it is a local model folder or a hub id whose config loads here; else one clear error."""
    from hh_ray.config import ConfigError

    p = Path(name).expanduser()
    if p.exists() or name.startswith((".", "/", "~")):
        if not (p / "config.json").is_file():
            raise ConfigError(f"{key}: {name} is not a model folder (no config.json there)")
        return str(p)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:160]
        raise ConfigError(f"{key}: '{name}' is not a preset ({', '.join(PRESETS)}), a local folder, or a hub id that "
                          f"loads here (offline?): {reason}") from None
    return name


def ensure_policy(policy: str, run_dir: str | Path, texts_fn, vocab_size: int, seed: int) -> str:
    """Path or id of the initial policy: a preset is built once under `run_dir`; anything else is checked."""
    if not is_preset(policy):
        return check_model(policy)
    out = Path(run_dir) / f"init-{policy}"
    if not (out / "config.json").is_file():
        tok = ensure_tokenizer(Path(run_dir) / "tokenizer", texts_fn, vocab_size)
        build_preset(policy, tok, out, seed=seed)
    return str(out)
