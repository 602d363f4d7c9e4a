"""Typed configuration of the labeling service: response sources, campaigns, the HTTP server, the database.

Loaded with `hh_ray.config.load_section(LabelConfig, path, overrides)` like every hh-ray config, so unknown
keys and wrong types fail at once with the key named; `validate` adds the cross-field checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hh_ray.config import ConfigError, RayConfig, load_section

HELPFUL = "helpful"
RED_TEAM = "red-team"
MODES = (HELPFUL, RED_TEAM)
# The preference-strength scale: a choice is A or B, and how much better, 1..3.
STRENGTHS = {1: "slightly better", 2: "better", 3: "much better"}
ECHO_PREFIX = "echo:"  # a source that always answers this fixed text (tests, smoke checks)


@dataclass
class SourceConfig:
    """One policy version under comparison: a Serve deployment whose replicas each hold a vLLM engine."""

    name: str = "v0"
    model: str = ""  # HF folder, hh-ray run folder (its ppo/policy, else sft), hub id, or "echo:<text>"
    version: int = 0  # the policy version this source serves (recorded with every comparison)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    max_model_len: int = 512  # the context is cut from the left to fit max_model_len - max_new_tokens
    kv_cache_gb: float = 0.25  # CPU engines only
    gpu_memory_utilization: float = 0.4  # GPU engines only
    # bf16 where the device runs it natively (a GPU, a CPU with AVX512-BF16/AMX), else fp32; as the rollout
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "bfloat16"
    enforce_eager: bool = False  # GPU: False captures CUDA graphs (fast decode); CPU engines always run eager
    cpus_per_replica: float = 0.5
    gpus_per_replica: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 2.0  # Serve's autoscaler keeps about this many requests per replica
    # sequences one engine decodes at once (vLLM's max_num_seqs, continuous batching); Serve routes up to twice
    # as many requests to a replica, the rest wait in the engine's queue
    max_batch_size: int = 16

    @property
    def echo_text(self) -> str | None:
        return self.model[len(ECHO_PREFIX):] if self.model.startswith(ECHO_PREFIX) else None


@dataclass
class CampaignConfig:
    """What labelers compare: two sources (the same name twice = two samples of one), in one mode."""

    name: str = "helpful-0"
    mode: str = HELPFUL  # helpful: pick the more helpful; red-team: pick the more harmful
    sources: list[str] = field(default_factory=lambda: ["v0", "v0"])


@dataclass
class ServerConfig:
    """HTTP, sessions and input limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    session_ttl_s: float = 8 * 3600.0
    secure_cookies: bool = False  # set true behind HTTPS so browsers send the session cookie only over TLS
    max_turn_chars: int = 2000
    # wrong passwords per (client address, name) within login_window_s; then that pair is locked for
    # login_window_s, doubling with each further lockout up to login_max_lockout_s (a success clears it)
    login_max_failures: int = 5
    login_window_s: float = 60.0
    login_max_lockout_s: float = 3600.0
    max_body_bytes: int = 65536  # larger request bodies get 413 before anything parses them
    ingress_min_replicas: int = 1
    ingress_max_replicas: int = 2
    ingress_cpus: float = 0.25
    generate_retries: int = 3  # resample when the two responses are empty or identical


@dataclass
class LabelConfig:
    """A labeling service: its folder (SQLite file, exports), database, sources, campaigns and server."""

    name: str = "label"
    dir: str = "runs/label"
    database_url: str = ""  # "" = SQLite file <dir>/label.db; else e.g. postgresql+psycopg://user@host:5432/db
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    campaigns: list[CampaignConfig] = field(default_factory=lambda: [CampaignConfig()])
    server: ServerConfig = field(default_factory=ServerConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    test_fraction: float = 0.1  # export: share of prompts (by prompt hash) written to test.jsonl.gz

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.dir).expanduser().resolve() / 'label.db'}"

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"unknown source '{name}'; configured: {', '.join(s.name for s in self.sources)}")

    def campaign(self, name: str) -> CampaignConfig:
        for c in self.campaigns:
            if c.name == name:
                return c
        raise ConfigError(f"unknown campaign '{name}'; configured: {', '.join(c.name for c in self.campaigns)}")


def validate(cfg: LabelConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"sources: names must be unique, got {names}")
    for s in cfg.sources:
        if not s.model:
            raise ConfigError(f"sources.{s.name}.model: empty; give a model folder, hub id or echo:<text>")
        if not 1 <= s.min_replicas <= s.max_replicas:
            raise ConfigError(f"sources.{s.name}: need 1 <= min_replicas <= max_replicas")
        if s.max_new_tokens >= s.max_model_len:
            raise ConfigError(f"sources.{s.name}: max_new_tokens must be below max_model_len")
    seen = set()
    for c in cfg.campaigns:
        if c.name in seen:
            raise ConfigError(f"campaigns: duplicate name '{c.name}'")
        seen.add(c.name)
        if c.mode not in MODES:
            raise ConfigError(f"campaigns.{c.name}.mode: expected one of {', '.join(MODES)}, got '{c.mode}'")
        if len(c.sources) != 2:
            raise ConfigError(f"campaigns.{c.name}.sources: expected two source names, got {c.sources}")
        for name in c.sources:
            cfg.source(name)
    srv = cfg.server
    if srv.max_turn_chars < 1 or srv.login_max_failures < 1 or srv.session_ttl_s <= 0:
        raise ConfigError("server: max_turn_chars, login_max_failures and session_ttl_s must be positive")
    if not 1 <= srv.ingress_min_replicas <= srv.ingress_max_replicas:
        raise ConfigError("server: need 1 <= ingress_min_replicas <= ingress_max_replicas")
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise ConfigError(f"test_fraction: must be in [0, 1), got {cfg.test_fraction}")


def load_label_config(path: str | os.PathLike | None = None,
                      overrides: list[str] | tuple[str, ...] = ()) -> LabelConfig:
    cfg = load_section(LabelConfig, path, overrides)
    validate(cfg)
    return cfg
