"""Typed job configuration: dataclasses loaded from YAML, `key.sub=value` overrides, strict validation.

One YAML file per job lives under `jobs/`. Every section is a dataclass; unknown keys and wrong types are
rejected with an error that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A job config that cannot be used; the message names the offending key."""


def default_data_dir() -> str:
    """`HH_RLHF_DIR` if set, else the shared local copy beside the checkout when present, else the hub id."""
    if os.environ.get("HH_RLHF_DIR"):
        return os.environ["HH_RLHF_DIR"]
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "shared" / "data" / "hh-rlhf", Path.cwd().parent / "shared" / "data" / "hh-rlhf"):
        if candidate.is_dir():
            return str(candidate)
    return "Anthropic/hh-rlhf"


@dataclass
class DataConfig:
    """Where comparisons come from and how they are mixed, split and cut to length."""

    data_dir: str = field(default_factory=default_data_dir)  # local folder in HH layout, or a hub dataset id
    split: str = "test"  # the only split present in the local copy; `train` on the hub
    subsets: list[str] = field(
        default_factory=lambda: ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]
    )
    subset_weights: dict[str, float] = field(default_factory=dict)  # multiplier on a subset's size; 1.0 if absent
    holdout_fraction: float = 0.1  # share of prompts held out for evaluation (split by prompt hash)
    strict: bool = False  # raise on the first malformed record instead of skipping it
    max_prompt_tokens: int = 256
    max_response_tokens: int = 128
    max_examples: int = 0  # 0 = all; else a cap after mixing (for quick runs)


@dataclass
class ModelConfig:
    """The policy: a preset name built offline (`tiny`, `small`) or any HF model id / local path."""

    policy: str = "tiny"
    tokenizer_vocab_size: int = 8192  # for the offline BPE tokenizer the presets use
    dtype: str = "auto"  # auto = fp32 on CPU, bf16 on GPU
    # capacity plan only: a built-in shape (e.g. Llama-2-7b; see hh_ray/ops/plan.py) or a folder with config.json,
    # used when `policy` is not readable where `hh-ray plan`/`submit` runs; "" = read `policy` itself
    shape: str = ""


@dataclass
class TrainerConfig:
    """A DeepSpeed trainer group: ranks, ZeRO stage, batch geometry and optimizer."""

    num_ranks: int = 1
    cpus_per_rank: float = 0.5
    gpus_per_rank: float = 0.0
    zero_stage: int = 0
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    total_steps: int = 0  # 0 = constant LR after warmup; else linear decay to 0 at this step
    grad_clip: float = 1.0
    # GPU-side settings (issue 11). Node type: a custom Ray resource that only the intended node type advertises
    # (cluster/*.yaml); every bundle of the group asks for a sliver of it, so the group lands there. "" = any node.
    node_resource: str = ""
    gradient_checkpointing: bool = False  # recompute activations in backward: ~1 hidden state per layer kept
    zero3_prefetch_bucket_size: int = 50_000_000  # ZeRO-3: parameters fetched ahead of use (DeepSpeed default)
    zero3_param_persistence_threshold: int = 100_000  # ZeRO-3: params smaller than this stay whole on every rank
    zero3_max_live_parameters: int = 1_000_000_000  # ZeRO-3: gathered parameters held at once
    forward_token_budget: int = 16384  # forward-only passes (values, logprobs): padded tokens per micro batch; 0 = all
    placement_strategy: str = "PACK"  # PACK (one node when it can) or STRICT_PACK (one node or wait: keeps every
    # ZeRO-3 gather on the node's NVLink; for groups no larger than a node)


@dataclass
class SFTConfig:
    """Supervised fine-tuning of the initial policy on chosen HH dialogues (loss on assistant tokens)."""

    steps: int = 100
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log_every: int = 10


@dataclass
class PMConfig:
    """Preference-model training: a backbone plus a scalar head, trained on pairwise comparisons."""

    backbone: str = "sft"  # "sft" = the SFT policy of this run; else an HF id / local path (e.g. MiniLM)
    epochs: float = 1.0
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=5e-5))
    margin: float = 0.0  # loss -log sigmoid(r_c - r_r - margin)
    center_coef: float = 0.0  # penalty coef * (r_c + r_r)^2 keeping scores centered at 0
    max_tokens: int = 384  # prompt + response (+ end-of-context token) for the PM input
    eval_every: int = 0  # 0 = only at the end
    log_every: int = 10


@dataclass
class RolloutConfig:
    """vLLM generation: engines, sampling and stopping at the end of the assistant turn."""

    num_engines: int = 1
    min_engines: int = 1
    max_engines: int = 1
    cpus_per_engine: float = 0.5
    gpus_per_engine: float = 0.0
    tensor_parallel_size: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    samples_per_prompt: int = 1
    backlog_per_engine: int = 64  # autoscaling: prompts per engine before another is asked for
    latency_threshold_s: float = 0.0  # autoscaling: grow when a generate call took longer (0 = off)
    scale_down_idle_s: float = 60.0  # autoscaling: shrink after demand stayed below capacity this long
    gpu_memory_utilization: float = 0.5
    kv_cache_gb: float = 1.0  # CPU engines only
    # GPU-side settings (issue 11); hh_ray/workers/placement.py turns them into bundles and vLLM arguments.
    executor_backend: str = "auto"  # auto = "uni" (in-process) at tensor_parallel_size 1, "ray" above; or mp/uni/ray
    enforce_eager: bool = False  # GPU: False captures CUDA graphs (fast decode); CPU engines always run eager
    seed_mode: str = "auto"  # engine = one seed per engine (batched sampling), request = per-request seeds
    # (reproducible per prompt, but vLLM samples those requests one by one); auto = engine on GPU, request on CPU
    node_resource: str = ""  # custom Ray resource of the node type engines go to (e.g. hh_rollout_node); "" = any


@dataclass
class PPOConfig:
    """PPO against the PM with reward r_PM - kl_coef * KL(policy || initial policy), as in Bai et al."""

    steps: int = 20
    prompts_per_step: int = 16
    kl_coef: float = 0.001  # the paper's lambda_KL
    kl_estimator: str = "k1"  # k1 (log ratio) or k3 (Schulman's unbiased, always >= 0)
    adaptive_kl_target: float = 0.0  # > 0 turns on the adaptive KL controller (Ziegler et al.)
    adaptive_kl_horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    epochs: int = 1
    minibatches: int = 1
    clip_ratio: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 1.0
    entropy_coef: float = 0.0
    whiten_advantages: bool = True
    eval_prompts: int = 32
    eval_every: int = 0  # 0 = only before and after
    checkpoint_every: int = 0  # 0 = only at the end
    scorer: str = "pm"  # "pm" = the PM of this run (or pm_checkpoint); "substring:<t>" = share of tokens containing t
    pm_checkpoint: str = ""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    policy_trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=1e-5))
    critic_trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=5e-5))
    reference_cpus: float = 0.25
    reference_gpus: float = 0.0  # fractional GPUs let reference and scorer share a device
    scorer_cpus: float = 0.25
    scorer_gpus: float = 0.0
    reference_node_resource: str = ""  # custom Ray resource of the reference model's node type; "" = any node
    scorer_node_resource: str = ""  # custom Ray resource of the PM scorer's node type; "" = any node
    sync_timeout_s: float = 600.0  # weight-sync process group (NCCL/gloo) timeout


@dataclass
class RayConfig:
    """How the driver reaches Ray: `local` starts an in-process cluster; else an address."""

    address: str = "local"
    num_cpus: int = 0  # 0 = Ray's own count (local only)
    cluster: str = ""  # cluster config the job is planned against (cluster/*.yaml); `hh-ray plan --cluster` overrides
    check_shared_storage: bool = True  # before training, every node must see run_dir (a token file per node)


@dataclass
class JobConfig:
    """A whole hh-ray job: data, models, and the SFT -> PM -> PPO stages."""

    name: str = "hh-ray"
    run_dir: str = "runs/hh-ray"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["data", "tokenizer", "sft", "pm", "ppo", "report"])
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    pm: PMConfig = field(default_factory=PMConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    ray: RayConfig = field(default_factory=RayConfig)


STAGES = ("data", "tokenizer", "sft", "pm", "ppo", "report")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(key_tp)} to {_type_name(val_tp)}, got {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")  # pragma: no cover - a bug in this file


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value) with the value read as YAML (so 3, 0.1, true, [a, b] get their types)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else ""


def load_section(cls: type, path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Read any typed config dataclass `cls` from YAML (defaults when `path` is None) plus `key.sub=value` overrides."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    for text in overrides:
        key, value = parse_override(text)
        _set_path(raw, key, value)
    return _build(cls, raw)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Read a job YAML (or the defaults when `path` is None), apply overrides, validate everything."""
    cfg = load_section(JobConfig, path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: JobConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    for stage in cfg.stages:
        if stage not in STAGES:
            raise ConfigError(f"stages: unknown stage '{stage}'; valid: {', '.join(STAGES)}")
    if cfg.ppo.kl_estimator not in ("k1", "k3"):
        raise ConfigError(f"ppo.kl_estimator: expected 'k1' or 'k3', got '{cfg.ppo.kl_estimator}'")
    if not 0.0 <= cfg.data.holdout_fraction < 1.0:
        raise ConfigError(f"data.holdout_fraction: must be in [0, 1), got {cfg.data.holdout_fraction}")
    for name, w in cfg.data.subset_weights.items():
        if w < 0:
            raise ConfigError(f"data.subset_weights.{name}: must be >= 0, got {w}")
    r = cfg.ppo.rollout
    if not 1 <= r.min_engines <= r.num_engines <= r.max_engines:
        raise ConfigError(
            f"ppo.rollout: need 1 <= min_engines <= num_engines <= max_engines, got "
            f"{r.min_engines}, {r.num_engines}, {r.max_engines}"
        )
    for sect, t in (("sft.trainer", cfg.sft.trainer), ("pm.trainer", cfg.pm.trainer),
                    ("ppo.policy_trainer", cfg.ppo.policy_trainer), ("ppo.critic_trainer", cfg.ppo.critic_trainer)):
        if t.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"{sect}.zero_stage: expected 0..3, got {t.zero_stage}")
        if t.num_ranks < 1 or t.micro_batch_size < 1 or t.grad_accum_steps < 1:
            raise ConfigError(f"{sect}: num_ranks, micro_batch_size and grad_accum_steps must be >= 1")
        if t.placement_strategy not in ("PACK", "STRICT_PACK", "SPREAD"):
            raise ConfigError(f"{sect}.placement_strategy: expected PACK, STRICT_PACK or SPREAD, "
                              f"got '{t.placement_strategy}'")
    if r.executor_backend not in ("auto", "uni", "mp", "ray"):
        raise ConfigError(f"ppo.rollout.executor_backend: expected auto, uni, mp or ray, got '{r.executor_backend}'")
    if r.seed_mode not in ("auto", "engine", "request"):
        raise ConfigError(f"ppo.rollout.seed_mode: expected auto, engine or request, got '{r.seed_mode}'")
    if r.tensor_parallel_size < 1:
        raise ConfigError(f"ppo.rollout.tensor_parallel_size: must be >= 1, got {r.tensor_parallel_size}")
    if r.tensor_parallel_size > 1 and r.gpus_per_engine not in (0.0, 1.0):
        raise ConfigError(f"ppo.rollout.gpus_per_engine: with tensor_parallel_size {r.tensor_parallel_size} each "
                          f"rank takes one whole GPU (vLLM's Ray executor), so 0 or 1, got {r.gpus_per_engine}")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: JobConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
