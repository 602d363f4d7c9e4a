"""What each group asks Ray for, and how a vLLM engine is configured: pure functions of the typed config.

Decisions that only matter on a GPU cluster live here so CPU tests can check them:

- A tensor-parallel engine gets one {"GPU": 1} bundle per TP rank (vLLM's Ray executor refuses a bundle with
  more than one GPU and puts one worker on each GPU bundle). The engine actor itself holds no GPU and captures
  its child tasks into the placement group, so vLLM's workers land in the engine's bundles. At TP 1 the engine
  runs in-process ("uni") on the GPU of its single bundle.
- Whether a group runs on GPU follows from its config (`device.py`), never from what the engine actor sees:
  at TP > 1 the actor has no GPU of its own.
- A group is steered to a node type by a custom resource that only that node type advertises; each bundle asks
  for a sliver of it (`NODE_MARKER`), so the marker never limits how many bundles a node holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hh_ray.algo.algorithms import ALGORITHMS

if TYPE_CHECKING:
    from hh_ray.config import PPOConfig, RolloutConfig

NODE_MARKER = 0.001  # how much of a node type's marker resource one bundle asks for
WEIGHT_SYNC_EXTENSION = "hh_ray.workers.rollout.WeightSyncExtension"


@dataclass(frozen=True)
class GroupPlacement:
    """One placement group: its bundles and strategy, and the resources and bundle of each actor in it."""

    bundles: list[dict[str, float]]
    strategy: str  # Ray placement strategy: PACK (prefer one node) or STRICT_PACK (one node, e.g. NVLink TP)
    actor_cpus: float
    actor_gpus: float
    actor_bundles: list[int] = field(default_factory=lambda: [0])  # bundle index of each actor
    capture_child_tasks: bool = False  # vLLM's Ray workers are child tasks of the engine actor

    @property
    def gpus(self) -> float:
        return sum(b.get("GPU", 0.0) for b in self.bundles)


def node_marker(node_resource: str) -> dict[str, float]:
    """The sliver of a node type's custom resource that ties a bundle to that node type ({} = any node)."""
    return {node_resource: NODE_MARKER} if node_resource else {}


def worker_placement(size: int, cpus: float, gpus: float = 0.0, node_resource: str = "",
                     strategy: str = "PACK") -> GroupPlacement:
    """`size` actors, one bundle each ({"CPU": c, "GPU": g} + node marker), packed onto as few nodes as fit."""
    bundle = {"CPU": cpus} | ({"GPU": gpus} if gpus else {}) | node_marker(node_resource)
    return GroupPlacement([dict(bundle) for _ in range(size)], strategy, cpus, gpus, list(range(size)))


def trainer_placement(t) -> GroupPlacement:
    """A DeepSpeed group from its TrainerConfig: one bundle per rank."""
    return worker_placement(t.num_ranks, t.cpus_per_rank, t.gpus_per_rank, t.node_resource, t.placement_strategy)


def engine_placement(rollout_cfg: RolloutConfig) -> GroupPlacement:
    """One engine's placement group (one engine per group, so an engine can come and go on its own node).

    TP 1 (or a CPU engine): one bundle with the engine's CPUs and GPU; the actor holds both.
    TP > 1 on GPU: bundle 0 = {"CPU": cpus, "GPU": 1}, bundles 1..TP-1 = {"GPU": 1}, all on one node; the actor
    holds only CPUs, and vLLM's Ray executor places one worker on each GPU bundle.
    """
    tp, cpus, gpus = rollout_cfg.tensor_parallel_size, rollout_cfg.cpus_per_engine, rollout_cfg.gpus_per_engine
    if tp == 1 or not gpus:
        return worker_placement(1, cpus, gpus, rollout_cfg.node_resource)
    if gpus != 1.0:
        raise ValueError(f"tensor_parallel_size {tp} needs gpus_per_engine 1 (one whole GPU per rank), got {gpus}")
    marker = node_marker(rollout_cfg.node_resource)
    bundles = [{"CPU": cpus, "GPU": 1.0} | marker] + [{"GPU": 1.0} | marker for _ in range(tp - 1)]
    return GroupPlacement(bundles, "STRICT_PACK", cpus, 0.0, [0], capture_child_tasks=True)


def executor_backend(rollout_cfg: RolloutConfig, on_gpu: bool) -> str:
    """vLLM's distributed executor: in-process at TP 1; Ray workers in the engine's bundles at TP > 1 on GPU."""
    if rollout_cfg.executor_backend != "auto":
        return rollout_cfg.executor_backend
    if rollout_cfg.tensor_parallel_size == 1:
        return "uni"
    return "ray" if on_gpu else "mp"


def per_request_seeds(rollout_cfg: RolloutConfig, on_gpu: bool) -> bool:
    """Seed every request (reproducible per prompt) or only the engine (vLLM samples the batch in one go).

    vLLM runs seeded requests through a per-request sampling loop, which costs most on a fast GPU decode; on CPU
    the per-request seeds keep tests reproducible regardless of how prompts are spread over engines.
    """
    if rollout_cfg.seed_mode == "auto":
        return not on_gpu
    return rollout_cfg.seed_mode == "request"


class EngineMemoryConfig(Protocol):
    """What `engine_kwargs` reads of an engine's config: a RolloutConfig, or a labeling service's source."""

    enforce_eager: bool
    gpu_memory_utilization: float
    kv_cache_gb: float


def engine_kwargs(engine_cfg: EngineMemoryConfig, on_gpu: bool, model_path: str, max_model_len: int, seed: int,
                  dtype: str = "auto") -> dict:
    """vLLM engine arguments every hh-ray engine shares (rollout and labeling service): eager or CUDA graphs,
    dtype and memory."""
    from hh_ray.models.forward import resolve_dtype

    kwargs = dict(
        model=model_path, tokenizer=model_path, seed=seed, max_model_len=max_model_len,
        # CUDA graphs on GPU unless asked otherwise; a CPU engine stays eager (compiling costs minutes there)
        enforce_eager=engine_cfg.enforce_eager or not on_gpu,
        dtype=str(resolve_dtype(dtype, on_gpu)).removeprefix("torch."),
    )
    if on_gpu:
        kwargs["gpu_memory_utilization"] = engine_cfg.gpu_memory_utilization
    else:
        kwargs["kv_cache_memory_bytes"] = int(engine_cfg.kv_cache_gb * 2**30)
        # vLLM 0.32 on CPU: a chunked prefill of a seeded request rewinds its generator with set_offset,
        # which CPU generators lack ("CPU Generator does not use offset"). Whole prefills avoid that path.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(8192, max_model_len)
    return kwargs


def vllm_engine_kwargs(rollout_cfg: RolloutConfig, on_gpu: bool, model_path: str, max_model_len: int, seed: int,
                       dtype: str = "auto") -> dict:
    """Arguments of `vllm.LLM` for one rollout engine: the shared `engine_kwargs` plus its executor, the weight
    sync extension and the logprobs the trainer compares with."""
    return engine_kwargs(rollout_cfg, on_gpu, model_path, max_model_len, seed, dtype) | dict(
        tensor_parallel_size=rollout_cfg.tensor_parallel_size,
        distributed_executor_backend=executor_backend(rollout_cfg, on_gpu),
        worker_extension_cls=WEIGHT_SYNC_EXTENSION,
        logprobs_mode="processed_logprobs",  # logprobs after temperature, as the trainer computes them
    )


def engine_env_to_clear(rollout_cfg: RolloutConfig, on_gpu: bool) -> tuple[str, ...]:
    """Variables the engine actor drops before building vLLM.

    At TP > 1 the actor holds no GPU, so Ray hands it an empty CUDA_VISIBLE_DEVICES; vLLM's Ray workers inherit
    the actor's environment and would then see no device. Without the variable each worker sees the GPU Ray
    gives it.
    """
    return ("CUDA_VISIBLE_DEVICES",) if on_gpu and executor_backend(rollout_cfg, on_gpu) == "ray" else ()


def ppo_group_placements(ppo_cfg: PPOConfig) -> dict[str, GroupPlacement]:
    """Every group of a PPO job, in the order the driver creates them: largest first (policy, critic), so a
    whole-node trainer group claims its node before single-GPU groups scatter over the nodes (Ray does not keep
    small groups together), then reference, scorer, the first `num_engines` engines, and last the engines
    autoscaling may add, up to `max_engines` (the most it asks for). No critic when the algorithm has none."""
    r, pl = ppo_cfg.rollout, ppo_cfg.placement
    engine = engine_placement(r)
    critic = ({"critic-trainer": trainer_placement(ppo_cfg.critic_trainer)}
              if ALGORITHMS[ppo_cfg.algorithm].needs_critic else {})
    out = {"policy-trainer": trainer_placement(ppo_cfg.policy_trainer)} | critic | {
        "reference": worker_placement(1, pl.reference_cpus, pl.reference_gpus, pl.reference_node_resource),
        "pm-scorer": worker_placement(1, pl.scorer_cpus, pl.scorer_gpus, pl.scorer_node_resource)}
    return out | {f"rollout-{i}": engine for i in range(r.max_engines)}
