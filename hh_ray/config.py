"""Typed job configuration: dataclasses loaded from YAML, `key.sub=value` overrides, strict validation.

One YAML file per job lives under `jobs/`. Every section is a dataclass; unknown keys and wrong types are
rejected with an error that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import yaml

from hh_ray.algo.algorithms import ALGORITHMS

RANDOM_INIT_PRESETS = ("tiny", "small", "medium")  # hh_ray.models.presets builds them; fp32 on CPU under "auto"


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
class ExtraData:
    """One more HH-layout folder (e.g. exported online comparisons): its train split joins the training side."""

    dir: str = ""
    weight: float = 1.0  # multiplier on its size (as subset_weights): 2.0 repeats each comparison twice


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
    max_examples: int = 0  # 0 = all; else a cap after mixing (for quick runs); extra folders are not capped
    # how a transcript becomes tokens: "chat" renders its turns through the model's chat template (the prompt ends
    # with the template's assistant header, a response ends with the end-of-turn token); "hh" keeps the raw
    # "\n\nHuman: ... \n\nAssistant:" text; "auto" = chat for tokenizers that ship a template, else hh
    format: Literal["auto", "chat", "hh"] = "auto"
    extra: list[ExtraData] = field(default_factory=list)  # more folders in HH layout, every subset in them read


@dataclass
class ModelConfig:
    """The policy: a preset (`tiny`, `small`, `medium` random-init; `smollm2-135m` pretrained) or an HF id / path."""

    policy: str = "tiny"
    tokenizer_vocab_size: int = 8192  # for the offline BPE tokenizer the presets use
    # every model. auto: bf16 on GPU; on CPU bf16 for pretrained models (fp32 where the CPU lacks native bf16,
    # logged once) and fp32 for the random-init presets, whose tests compare engine and trainer exactly
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # capacity plan only: a built-in shape (e.g. Llama-2-7b; see hh_ray/ops/plan.py) or a folder with config.json,
    # used when `policy` is not readable where `hh-ray plan`/`submit` runs; "" = read `policy` itself
    shape: str = ""


@dataclass
class LoRAConfig:
    """Low-rank adapters (peft) on a trainer's model: only the adapters (and a new scalar head) learn."""

    rank: int = 0  # 0 = off: every weight trains
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                "up_proj", "down_proj"])
    # adapters only on the top N layers (0 = all): backward then stops at the lowest adapted layer, so the layers
    # below cost a forward pass alone
    top_layers: int = 0


@dataclass
class TrainerConfig:
    """A DeepSpeed trainer group: ranks, ZeRO stage, batch geometry and optimizer."""

    num_ranks: int = 1
    cpus_per_rank: float = 0.5
    gpus_per_rank: float = 0.0
    zero_stage: Literal[0, 1, 2, 3] = 0
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    total_steps: int = 0  # 0 = constant LR after warmup; else linear decay to 0 at this step
    grad_clip: float = 1.0
    forward_micro_batch_size: int = 16  # forward-only passes (logprobs, values, PM eval): samples per call
    forward_token_budget: int = 16384  # ... and at most this many prompt+response tokens per call
    # GPU-side settings (issue 11). Node type: a custom Ray resource that only the intended node type advertises
    # (cluster/*.yaml); every bundle of the group asks for a sliver of it, so the group lands there. "" = any node.
    node_resource: str = ""
    gradient_checkpointing: bool = False  # recompute activations in backward: ~1 hidden state per layer kept
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    zero3_prefetch_bucket_size: int = 50_000_000  # ZeRO-3: parameters fetched ahead of use (DeepSpeed default)
    zero3_param_persistence_threshold: int = 100_000  # ZeRO-3: params smaller than this stay whole on every rank
    zero3_max_live_parameters: int = 1_000_000_000  # ZeRO-3: gathered parameters held at once
    # PACK: one node when it can; STRICT_PACK: one node or wait (keeps every ZeRO-3 gather on the node's NVLink;
    # for groups no larger than a node)
    placement_strategy: Literal["PACK", "STRICT_PACK", "SPREAD"] = "PACK"


@dataclass
class SFTConfig:
    """Supervised fine-tuning of the initial policy on chosen HH dialogues (loss on assistant tokens)."""

    steps: int = 100
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log_every: int = 10
    checkpoint_every: int = 0  # 0 = only at the end; an interrupted stage resumes from its last checkpoint
    # "sft": NLL on the chosen dialogues' assistant turns; "context_distill": the policy without `hhh_prompt`
    # learns to match its own next-token distribution with it (KL), the paper's initial policy
    mode: Literal["sft", "context_distill"] = "sft"
    hhh_prompt: str = ""  # empty = hh_ray.algo.distill.HHH_PROMPT


@dataclass
class PMConfig:
    """Preference-model training: a backbone plus a scalar head, trained on pairwise comparisons."""

    backbone: str = "sft"  # "sft" = the SFT policy of this run; else an HF id / local path (e.g. MiniLM)
    epochs: float = 1.0
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=5e-5))
    margin: float = 0.0  # loss -log sigmoid(r_c - r_r - margin)
    center_coef: float = 0.0  # penalty coef * (r_c + r_r)^2 keeping scores centered at 0
    max_tokens: int = 384  # prompt + response (+ end-of-context token) for the PM input
    # also train a test PM on the other half of the comparisons (split by prompt): PPO's held-out evaluation
    # scores the same samples with both, to see whether the policy improved or only exploited its own PM
    test_split: bool = False
    eval_every: int = 0  # 0 = only at the end
    log_every: int = 10
    checkpoint_every: int = 0  # 0 = only at the end; an interrupted stage resumes from its last checkpoint


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
    executor_backend: Literal["auto", "uni", "mp", "ray"] = "auto"  # auto: uni (in-process) at TP 1, else ray
    enforce_eager: bool = False  # GPU: False captures CUDA graphs (fast decode); CPU engines always run eager
    # engine = one seed per engine (batched sampling), request = per-request seeds (reproducible per prompt, but
    # vLLM samples those requests one by one); auto = engine on GPU, request on CPU
    seed_mode: Literal["auto", "engine", "request"] = "auto"
    node_resource: str = ""  # custom Ray resource of the node type engines go to (e.g. hh_rollout_node); "" = any


@dataclass
class RewardConfig:
    """What PPO maximizes: the scorer's score minus kl_coef * KL(policy || initial policy), as in Bai et al."""

    kl_coef: float = 0.001  # the paper's lambda_KL
    # KL(policy || initial policy) is measured per sample, summed over the response's tokens (nats), with this
    # estimator in training and in held-out evaluation alike: k1 (log ratio) or k3 (Schulman's, always >= 0)
    kl_estimator: Literal["k1", "k3"] = "k1"
    # > 0 turns on the adaptive KL controller (Ziegler et al.). The target is in the same unit, nats summed over
    # a response (OpenRLHF's target is a per-token mean: multiply that by the response length to compare)
    adaptive_kl_target: float = 0.0
    adaptive_kl_horizon: int = 10000
    truncation_penalty: float = 0.0  # subtracted from the score of a response cut at max_new_tokens (0 = off)
    scorer: str = "pm"  # "pm" = the PM of this run (or pm_checkpoint); "substring:<t>" = share of tokens containing t
    pm_checkpoint: str = ""


@dataclass
class AlgoConfig:
    """The update: advantages (GAE's gamma and lam), clipped-surrogate epochs over minibatches, loss coefficients."""

    gamma: float = 1.0
    lam: float = 0.95
    epochs: int = 1
    minibatches: int = 1
    clip_ratio: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 1.0
    entropy_coef: float = 0.0
    whiten_advantages: bool = True  # GAE's; GRPO normalizes within each prompt's group instead
    # the PPO ratio's denominator and the policy side of the KL: "trainer" recomputes them on the sampled tokens
    # (exact); "engine" reuses vLLM's sampling logprobs (cheaper; refused with top_p < 1 or a non-fp32 dtype)
    old_logprobs: Literal["trainer", "engine"] = "trainer"


@dataclass
class PlacementConfig:
    """Resources of the frozen models: the reference (initial policy) and the PM scorer."""

    reference_cpus: float = 0.25
    reference_gpus: float = 0.0  # fractional GPUs let reference and scorer share a device
    scorer_cpus: float = 0.25
    scorer_gpus: float = 0.0
    reference_node_resource: str = ""  # custom Ray resource of the reference model's node type; "" = any node
    scorer_node_resource: str = ""  # custom Ray resource of the PM scorer's node type; "" = any node


@dataclass
class SyncConfig:
    """Weight sync from the policy trainer to the engines after every update."""

    bucket_mb: int = 32  # parameters travel in flat buckets of this size
    timeout_s: float = 600.0  # a broadcast that waits longer fails (gloo and NCCL alike)


@dataclass
class PPOConfig:
    """PPO against the PM with reward r_PM - kl_coef * KL(policy || initial policy), as in Bai et al.: the run's
    shape here, the reward, the update, the frozen models' placement and the weight sync in sections."""

    # ppo: GAE against a critic; grpo: group-relative advantages over ppo.rollout.samples_per_prompt (>= 2) samples
    # of each prompt, no critic (hh_ray/algo/algorithms.py). Both keep the KL to the reference in the reward.
    algorithm: Literal["ppo", "grpo"] = "ppo"
    steps: int = 20
    prompts_per_step: int = 16
    eval_prompts: int = 32
    eval_every: int = 0  # 0 = only before and after
    checkpoint_every: int = 0  # 0 = only at the end
    # the engines generate the next batch with the policy they hold while the trainers train on this one: every
    # batch is one policy version behind. With algo.old_logprobs=trainer the update is decoupled PPO (the ratio
    # clipped around the trainer's current policy, each token weighted by pi_trainer / pi_engine, capped); with
    # algo.old_logprobs=engine it is plain PPO against the behaviour policy. Off: generation and training
    # alternate, exactly as without the flag.
    async_rollout: bool = False
    # > 0: policy, critic and reference passes pack samples into rows of at least this many tokens, each sample
    # attending only to itself, so no compute is spent on padding (outputs equal the padded passes')
    pack_tokens: int = 0
    max_failures: int = 3  # trainer-rank deaths survived in one command (both trainer groups rebuilt each time)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    policy_trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=1e-5))
    critic_trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=5e-5))
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)


# Keys that moved into a section, per section class: old key -> its new path, both relative to that section. A
# config that still uses an old key is refused with the new one named (never silently read or ignored).
PPO_MOVED_KEYS: dict[str, str] = {
    **{k: f"reward.{k}" for k in ("kl_coef", "kl_estimator", "adaptive_kl_target", "adaptive_kl_horizon",
                                  "truncation_penalty", "scorer", "pm_checkpoint")},
    **{k: f"algo.{k}" for k in ("gamma", "lam", "epochs", "minibatches", "clip_ratio", "value_clip", "value_coef",
                                "entropy_coef", "whiten_advantages", "old_logprobs")},
    **{k: f"placement.{k}" for k in ("reference_cpus", "reference_gpus", "reference_node_resource", "scorer_cpus",
                                     "scorer_gpus", "scorer_node_resource")},
    "sync_bucket_mb": "sync.bucket_mb",
    "sync_timeout_s": "sync.timeout_s",
}
MOVED_KEYS: dict[type, dict[str, str]] = {PPOConfig: PPO_MOVED_KEYS}


@dataclass
class LoggingConfig:
    """Where step metrics go besides `metrics.jsonl`: TensorBoard event files, and W&B when asked."""

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "hh-ray"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"  # offline: no network; `wandb sync` uploads later


@dataclass
class RayConfig:
    """How the driver reaches Ray: `local` starts an in-process cluster; else an address."""

    address: str = "local"
    num_cpus: int = 0  # 0 = Ray's own count (local only)
    cluster: str = ""  # cluster config the job is planned against (cluster/*.yaml); `hh-ray plan --cluster` overrides
    check_shared_storage: bool = True  # before training, every node must see run_dir (a token file per node)
    # SIGTERM/SIGINT: seconds to finish the step in progress and checkpoint it before the step is abandoned (keep
    # it below the platform's own grace, e.g. Kubernetes' terminationGracePeriodSeconds, 30 by default)
    stop_grace_s: float = 25.0


@dataclass
class AnalysesConfig:
    """The paper's analyses that `hh-ray run` adds after PPO when their stage is listed (jobs/paper.yaml); the
    same analyses run alone as `hh-ray bon`, `tradeoff`, `alignment-tax` and `ood`."""

    bon_ns: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    bon_prompts: int = 32  # held-out prompts (best-of-N and the policies' helpful/harmless points)
    # tradeoff: one PM per harmless-base weight in the PM's data mix, and the initial and final policies scored
    # per subset by the run's PM
    harmless_weights: list[float] = field(default_factory=lambda: [0.5, 2.0])
    harmless_only_pm: bool = False  # and a PM trained on harmless-base alone
    lm_eval_tasks: list[str] = field(default_factory=list)  # empty = local HH choice tasks (no hub needed)
    hh_task_questions: int = 100  # questions per local HH choice task
    lm_eval_limit: int = 0  # 0 = every example of each task
    ood_model: str = "pm"  # "pm" (the run's PM), "policy" (the final policy) or an HF folder / all-MiniLM-L6-v2
    ood_layer: int = -1
    ood_layers: list[int] = field(default_factory=list)  # several: the best on a validation split is reported
    ood_fit_prompts: int = 400
    ood_val_prompts: int = 100  # per side, choosing among ood_layers
    ood_test_prompts: int = 200


Stage = Literal["data", "tokenizer", "sft", "pm", "ppo", "initial_policies", "bon", "tradeoff", "alignment_tax", "ood",
                "report"]


@dataclass
class JobConfig:
    """A whole hh-ray job: data, models, and the SFT -> PM -> PPO stages."""

    name: str = "hh-ray"
    run_dir: str = "runs/hh-ray"
    seed: int = 0
    fresh: bool = False  # start each stage over: delete its checkpoints and metrics first (else it resumes)
    stages: list[Stage] = field(default_factory=lambda: ["data", "tokenizer", "sft", "pm", "ppo", "report"])
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    pm: PMConfig = field(default_factory=PMConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    analyses: AnalysesConfig = field(default_factory=AnalysesConfig)


def train_dtype(model: ModelConfig) -> str:
    """The dtype workers get: `model.dtype`, with "auto" for a pretrained model made "bfloat16" (which a CPU
    without native bf16 turns into fp32). The random-init presets keep "auto": fp32 on CPU, bf16 on GPU."""
    return "bfloat16" if model.dtype == "auto" and model.policy not in RANDOM_INIT_PRESETS else model.dtype


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if not any(value == c and type(value) is type(c) for c in choices):  # 1.0 and True are not 1
            names = [repr(c) for c in choices]
            raise ConfigError(f"{key}: expected {', '.join(names[:-1])} or {names[-1]}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {type(value).__name__}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(value, arg, key)
                except ConfigError:
                    pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(key_tp)} to {_type_name(val_tp)}, "
                              f"got {value!r}")
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
    moved = MOVED_KEYS.get(cls, {})
    for key in raw:
        if key in moved:
            raise ConfigError(f"{prefix}{key} moved: use {prefix}{moved[key]}")
        if key not in names:
            near = difflib.get_close_matches(str(key), names + list(moved), n=1, cutoff=0.5)
            hint = (f"; did you mean '{prefix}{moved.get(near[0], near[0])}'?" if near
                    else f"; valid keys: {', '.join(names)}")
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
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': the value of {key.strip()} is not valid YAML "
                          f"({str(exc).splitlines()[0]})") from None


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


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: JobConfig) -> None:
    """Cross-field and range checks that types alone cannot express; all before any cluster starts."""
    d, p, r, u = cfg.data, cfg.ppo, cfg.ppo.rollout, cfg.ppo.algo
    _check(0.0 <= d.holdout_fraction < 1.0, f"data.holdout_fraction: must be in [0, 1), got {d.holdout_fraction}")
    for name, w in d.subset_weights.items():
        _check(w >= 0, f"data.subset_weights.{name}: must be >= 0, got {w}")
    for i, x in enumerate(d.extra):
        _check(bool(x.dir) and x.weight >= 0, f"data.extra[{i}]: needs a dir and a weight >= 0, got {x}")
    _check(d.max_prompt_tokens >= 1 and d.max_response_tokens >= 1,
           "data.max_prompt_tokens and data.max_response_tokens must be >= 1")
    if u.old_logprobs == "engine":
        _check(r.top_p == 1.0, f"ppo.algo.old_logprobs=engine: vLLM reports logprobs after top-p filtering, which "
                               f"differ from the full softmax (ppo.rollout.top_p={r.top_p}); use "
                               f"ppo.algo.old_logprobs=trainer")
        on_gpu = r.gpus_per_engine > 0 or p.policy_trainer.gpus_per_rank > 0
        dtype = train_dtype(cfg.model)
        _check(dtype == "float32" or (dtype == "auto" and not on_gpu),
               "ppo.algo.old_logprobs=engine: engine and trainer logprobs agree only in float32 (model.dtype "
               "resolves to a 16-bit type here); use ppo.algo.old_logprobs=trainer")
    for key in ("reward.kl_coef", "reward.truncation_penalty", "algo.gamma", "algo.lam", "algo.clip_ratio",
                "algo.value_clip", "algo.value_coef", "algo.entropy_coef"):
        v = attrgetter(key)(p)
        _check(math.isfinite(v) and v >= 0, f"ppo.{key}: must be a finite number >= 0, got {v}")
    _check(u.gamma <= 1 and u.lam <= 1, f"ppo.algo.gamma and ppo.algo.lam must be in [0, 1], got {u.gamma}, {u.lam}")
    for key in ("steps", "prompts_per_step", "algo.epochs", "algo.minibatches", "eval_prompts", "sync.bucket_mb"):
        _check(attrgetter(key)(p) >= 1, f"ppo.{key}: must be >= 1, got {attrgetter(key)(p)}")
    for key in ("eval_every", "checkpoint_every", "max_failures", "pack_tokens"):
        _check(getattr(p, key) >= 0, f"ppo.{key}: must be >= 0 (0 = off), got {getattr(p, key)}")
    _check(r.temperature > 0 and math.isfinite(r.temperature),
           f"ppo.rollout.temperature: must be > 0, got {r.temperature}")
    _check(0 < r.top_p <= 1, f"ppo.rollout.top_p: must be in (0, 1], got {r.top_p}")
    for key in ("max_new_tokens", "samples_per_prompt", "tensor_parallel_size"):
        _check(getattr(r, key) >= 1, f"ppo.rollout.{key}: must be >= 1, got {getattr(r, key)}")
    _check(1 <= r.min_engines <= r.num_engines <= r.max_engines,
           f"ppo.rollout: need 1 <= min_engines <= num_engines <= max_engines, got "
           f"{r.min_engines}, {r.num_engines}, {r.max_engines}")
    scorer = p.reward.scorer
    _check(scorer == "pm" or (scorer.startswith("substring:") and len(scorer) > len("substring:")),
           f"ppo.reward.scorer: expected 'pm' or 'substring:<text>', got '{scorer}'")
    # the PM reads the whole response: the prompt gives way, never the response (decoder PMs add one token)
    _check(cfg.pm.max_tokens >= r.max_new_tokens + 1 + 8,
           f"pm.max_tokens={cfg.pm.max_tokens} cannot hold a full {r.max_new_tokens}-token response "
           f"(ppo.rollout.max_new_tokens) plus the end-of-context token and some context; raise pm.max_tokens to at "
           f"least {r.max_new_tokens + 9}")
    for sect, t in (("sft.trainer", cfg.sft.trainer), ("pm.trainer", cfg.pm.trainer),
                    ("ppo.policy_trainer", p.policy_trainer), ("ppo.critic_trainer", p.critic_trainer)):
        _validate_trainer(sect, t)
    _check(r.tensor_parallel_size == 1 or r.gpus_per_engine in (0.0, 1.0),
           f"ppo.rollout.gpus_per_engine: with tensor_parallel_size {r.tensor_parallel_size} each rank takes one "
           f"whole GPU (vLLM's Ray executor), so 0 or 1, got {r.gpus_per_engine}")
    # every sample is trained on each epoch: the smallest minibatch must still give each rank its micro-batches
    batch = p.prompts_per_step * r.samples_per_prompt
    smallest = batch // u.minibatches
    spec = ALGORITHMS[p.algorithm]
    _check(r.samples_per_prompt >= spec.min_samples_per_prompt,
           f"ppo.algorithm={p.algorithm}: needs ppo.rollout.samples_per_prompt >= {spec.min_samples_per_prompt} (each "
           f"sample is compared with the others of its prompt), got {r.samples_per_prompt}")
    trainers = (("ppo.policy_trainer", p.policy_trainer),) + ((("ppo.critic_trainer", p.critic_trainer),)
                                                             if spec.needs_critic else ())
    for sect, t in trainers:
        need = t.num_ranks * t.grad_accum_steps
        _check(smallest >= need, f"ppo: a minibatch of {smallest} samples ({batch} per step / {u.minibatches} "
                                 f"minibatches) is smaller than {sect}'s ranks x grad_accum_steps = {need}")
    _check(cfg.sft.steps >= 1, f"sft.steps: must be >= 1, got {cfg.sft.steps}")
    _check(cfg.pm.epochs > 0, f"pm.epochs: must be > 0, got {cfg.pm.epochs}")
    _validate_analyses(cfg.analyses)


def _validate_trainer(sect: str, t: TrainerConfig) -> None:
    """Batch geometry, learning rate and LoRA of the trainer section `sect`."""
    _check(min(t.num_ranks, t.micro_batch_size, t.grad_accum_steps, t.forward_micro_batch_size,
               t.forward_token_budget) >= 1,
           f"{sect}: num_ranks, micro_batch_size, grad_accum_steps and the forward limits must be >= 1")
    _check(t.lr > 0 and math.isfinite(t.lr), f"{sect}.lr: must be > 0, got {t.lr}")
    _check(t.lora.rank >= 0 and t.lora.top_layers >= 0 and bool(t.lora.target_modules),
           f"{sect}.lora: rank and top_layers must be >= 0 and target_modules non-empty")
    _check(t.lora.rank == 0 or t.zero_stage < 3,
           f"{sect}.lora: LoRA trains with ZeRO stage 0-2 (the frozen base is small next to its optimizer "
           f"state); got zero_stage 3")


def _validate_analyses(a: AnalysesConfig) -> None:
    """Sizes of the paper's analyses (bon, tradeoff, alignment tax, OOD)."""
    _check(bool(a.bon_ns) and min(a.bon_ns) >= 1, f"analyses.bon_ns: need positive integers, got {a.bon_ns}")
    _check(a.bon_prompts >= 2, f"analyses.bon_prompts: need at least 2 prompts, got {a.bon_prompts}")
    _check(bool(a.harmless_weights) and min(a.harmless_weights) >= 0,
           f"analyses.harmless_weights: need weights >= 0, got {a.harmless_weights}")
    _check(a.hh_task_questions >= 2 and a.lm_eval_limit >= 0 and a.ood_fit_prompts >= 2 and a.ood_test_prompts >= 2,
           "analyses: hh_task_questions, ood_fit_prompts and ood_test_prompts must be >= 2, lm_eval_limit >= 0")


def dump_config(cfg: JobConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
