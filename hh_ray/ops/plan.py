"""`hh-ray plan`: a capacity plan of a PPO job, checked before anything is submitted.

Per group and per GPU it estimates memory (decimal GB, 1e9 bytes) from the model's shape and the job config,
places every group's bundles on the cluster's node types as Ray would (custom node-type resources included),
and says whether the whole job fits. The accounting, all in bf16 on GPU:

- Trainer rank (DeepSpeed, mixed-precision AdamW; the ZeRO paper's accounting, Rajbhandari et al. 2020):
  bf16 weights 2 B, bf16 gradients 2 B, fp32 master weights + Adam m + v 12 B per parameter. ZeRO-1 splits
  the optimizer state over the N ranks, ZeRO-2 also the gradients, ZeRO-3 also the weights. ZeRO-3 adds the
  gathered parameters it holds at once (2 B x min(P, stage3_max_live_parameters)).
- Activations of one training micro batch (rows x sequence tokens). Per token and decoder layer a Llama block
  keeps 2 B x (6h + 2h_kv + 4i) for backward: the two norm inputs and outputs (4h), q and the attention output
  (2h), k and v (2h_kv) and the MLP's gate, up, activation and product (4i); attention itself is fused (SDPA or
  flash), so no T x T scores are kept. With gradient checkpointing only each layer's input (2h) is kept, plus
  one layer's full set while it is recomputed. An LM head adds 12 B per (response token, vocabulary entry):
  fp32 logits, their log-softmax and its gradient.
- Forward-only passes (values, logprobs, reference, scorer): one layer's set for the tokens of one micro batch
  (the token budget) plus 8 B per (response token, vocabulary entry) for an LM head.
- Every GPU process: `RUNTIME_GB` for the CUDA context, NCCL buffers and allocator slack.
- A vLLM engine claims `gpu_memory_utilization` of each of its GPUs: bf16 weights / TP, `ENGINE_RESERVE_GB` for
  its activations and CUDA graphs, and the KV cache gets the rest. It must hold at least one whole sequence.

Model shapes come from a preset name, a built-in table of well-known 7-8B shapes (`SHAPES`; HF ids map to
them by their last path part), or a folder's `config.json`; `model.shape` names one when `model.policy` is a
path the planning machine cannot read. The PM is sized from `ppo.reward.pm_checkpoint` when readable, else as the
policy. Node types come from a Ray cluster-launcher YAML (`available_node_types`) or a KubeRay RayCluster /
RayJob (head and worker groups: rayStartParams, container limits); GPU memory from the instance type
(`INSTANCE_GPU_GB`) or the pod annotation `hh-ray/gpu-memory-gb`, else `--gpu-memory-gb`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hh_ray.algo.algorithms import ALGORITHMS
from hh_ray.models.forward import SCORE_BATCH_ROWS
from hh_ray.workers.reference import MICRO_BATCH_ROWS

if TYPE_CHECKING:
    from hh_ray.config import JobConfig, PPOConfig

GB = 1e9
RUNTIME_GB = 3.0  # CUDA context, NCCL buffers, allocator fragmentation: per GPU process
ENGINE_RESERVE_GB = 2.0  # a vLLM engine's activations and CUDA graphs inside its memory fraction, per GPU
DEFAULT_GPU_GB = 80.0
ANNOTATION = "hh-ray/gpu-memory-gb"


class PlanError(ValueError):
    """The plan cannot be made (unknown model shape, unreadable cluster config); the message says why."""


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: a Llama-style decoder's widths (kv_heads < heads = grouped-query attention)."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False

    @property
    def kv_width(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    def params(self, head: str) -> int:
        """Parameters with an LM head ("lm") or a scalar head ("scalar": value model, PM)."""
        h, i = self.hidden, self.intermediate
        layer = 2 * h * h + 2 * h * self.kv_width + 3 * h * i + 2 * h  # q, o, k, v, gate/up/down, two norms
        body = self.vocab * h + self.layers * layer + h  # embeddings, layers, final norm
        if head == "lm":
            return body + (0 if self.tied else self.vocab * h)
        return body + h

    def activation_bytes_per_token_layer(self) -> int:
        return 2 * (6 * self.hidden + 2 * self.kv_width + 4 * self.intermediate)

    def kv_bytes_per_token(self) -> int:
        """bf16 K and V of one token over all layers (the whole engine; divide by TP per GPU)."""
        return 2 * 2 * self.layers * self.kv_width


# Well-known shapes, so a 7B job can be planned offline (keys are matched case-insensitively against an HF id's
# last path part, e.g. meta-llama/Llama-2-7b-hf -> llama-2-7b-hf)
SHAPES = {
    "llama-2-7b": ModelShape(4096, 32, 11008, 32000, 32, 32),
    "llama-2-13b": ModelShape(5120, 40, 13824, 32000, 40, 40),
    "llama-3-8b": ModelShape(4096, 32, 14336, 128256, 32, 8),
    "llama-3.1-8b": ModelShape(4096, 32, 14336, 128256, 32, 8),
    "mistral-7b": ModelShape(4096, 32, 14336, 32000, 32, 8),
    "qwen2.5-7b": ModelShape(3584, 28, 18944, 152064, 28, 4),
    "smollm2-135m": ModelShape(576, 30, 1536, 49152, 9, 3, tied=True),  # the pretrained preset (models.presets)
}


def shape_from_hf_config(cfg: dict, where: str) -> ModelShape:
    try:
        heads = cfg["num_attention_heads"]
        return ModelShape(cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"],
                          heads, cfg.get("num_key_value_heads") or heads, bool(cfg.get("tie_word_embeddings", False)))
    except KeyError as exc:
        raise PlanError(f"{where}: config.json lacks {exc.args[0]}") from None


def model_shape(name: str, vocab_size: int = 8192) -> ModelShape:
    """A preset, a built-in shape (or an HF id whose last part names one), or a folder with config.json."""
    from hh_ray.models.presets import PRESETS

    if name in PRESETS:
        p = PRESETS[name]
        return ModelShape(p["hidden_size"], p["num_hidden_layers"], p["intermediate_size"], vocab_size,
                          p["num_attention_heads"], p["num_key_value_heads"])
    cfg_file = Path(name) / "config.json"
    if cfg_file.is_file():
        return shape_from_hf_config(json.loads(cfg_file.read_text()), str(cfg_file))
    key = name.rstrip("/").split("/")[-1].lower()
    for known in sorted(SHAPES, key=len, reverse=True):  # llama-3.1-8b before llama-3-8b... longest match first
        if key == known or key.startswith(known + "-") or key.startswith(known + "_"):
            return SHAPES[known]
    raise PlanError(f"cannot size model '{name}': not a preset ({', '.join(PRESETS)}), no config.json there, and "
                    f"not a built-in shape ({', '.join(SHAPES)}); set model.shape to one of those or to a folder "
                    "holding the model's config.json")


# ---- memory per actor ------------------------------------------------------------------------------------
def trainer_memory(shape: ModelShape, head: str, t, train_rows: int, seq: int, response: int,
                   forward_tokens: int) -> dict[str, float]:
    """GB per GPU of one trainer rank: weights, gradients, optimizer, ZeRO-3 gathers, activations, runtime."""
    P, n, stage = shape.params(head), t.num_ranks, t.zero_stage
    out = {
        "weights": 2 * P / (n if stage >= 3 else 1),
        "gradients": 2 * P / (n if stage >= 2 else 1),
        "optimizer": 12 * P / (n if stage >= 1 else 1),
    }
    if stage == 3:
        out["zero3_gathered"] = 2 * min(P, t.zero3_max_live_parameters)
    tokens = train_rows * seq
    per_layer = shape.activation_bytes_per_token_layer()
    if t.gradient_checkpointing:
        body = tokens * (shape.layers * 2 * shape.hidden + per_layer)
    else:
        body = tokens * shape.layers * per_layer
    logits = train_rows * response * shape.vocab * 12 if head == "lm" else 0
    train = body + logits
    forward = forward_pass_bytes(shape, head, forward_tokens, response / seq)
    out["activations"] = max(train, forward)
    out["runtime"] = RUNTIME_GB * GB
    return {k: v / GB for k, v in out.items()}


def forward_pass_bytes(shape: ModelShape, head: str, tokens: int, response_share: float) -> float:
    """Peak of one no-grad forward over `tokens` padded tokens (layers freed as they finish)."""
    logits = tokens * response_share * shape.vocab * 8 if head == "lm" else 0
    return tokens * shape.activation_bytes_per_token_layer() + logits


def inference_memory(shape: ModelShape, head: str, rows: int, seq: int, response: int) -> dict[str, float]:
    """GB of a frozen bf16 model (reference, scorer) with its forward micro batch."""
    return {"weights": 2 * shape.params(head) / GB,
            "activations": forward_pass_bytes(shape, head, rows * seq, response / seq if head == "lm" else 0) / GB,
            "runtime": RUNTIME_GB}


def engine_memory(shape: ModelShape, tp: int, utilization: float, gpu_gb: float, max_model_len: int) -> dict:
    """GB per GPU of one vLLM engine rank: its whole memory fraction, split into weights, reserve and KV cache."""
    claimed = utilization * gpu_gb
    weights = 2 * shape.params("lm") / tp / GB
    kv = claimed - weights - ENGINE_RESERVE_GB
    per_token = shape.kv_bytes_per_token() / tp / GB
    return {"claimed": claimed, "weights": weights, "reserve": ENGINE_RESERVE_GB, "kv_cache": kv,
            "kv_tokens": max(0, int(kv / per_token)), "max_model_len": max_model_len}


# ---- cluster node types ----------------------------------------------------------------------------------
@dataclass
class NodeType:
    name: str
    resources: dict[str, float]
    max_count: int
    gpu_gb: float | None = None


INSTANCE_GPU_GB = {  # AWS instance type -> memory of each GPU (GB as NVIDIA states it)
    "p5.48xlarge": 80.0, "p5e.48xlarge": 141.0, "p5en.48xlarge": 141.0, "p4de.24xlarge": 80.0,
    "p4d.24xlarge": 40.0, "g6e.xlarge": 48.0, "g6e.2xlarge": 48.0, "g6e.4xlarge": 48.0, "g6e.12xlarge": 48.0,
    "g6e.48xlarge": 48.0, "g5.xlarge": 24.0, "g5.2xlarge": 24.0, "g5.12xlarge": 24.0, "g5.48xlarge": 24.0,
    "g6.xlarge": 24.0, "g6.2xlarge": 24.0,
}


def _quantity(text) -> float:
    """A Kubernetes quantity as a number (cpu "96" or "500m"; counts)."""
    s = str(text)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def _custom_resources(text: str | None) -> dict[str, float]:
    """rayStartParams.resources: a JSON object, possibly wrapped in one more pair of quotes as KubeRay shows."""
    if not text:
        return {}
    s = text.strip()
    if s.startswith('"') and s.endswith('"'):
        s = json.loads(s)
    return {k: float(v) for k, v in json.loads(s).items()}


def _kuberay_group(name: str, group: dict, count: int) -> NodeType:
    params = group.get("rayStartParams") or {}
    spec = group.get("template", {}).get("spec", {})
    container = (spec.get("containers") or [{}])[0]
    limits = (container.get("resources") or {}).get("limits") or {}
    res: dict[str, float] = {}
    res["CPU"] = float(params["num-cpus"]) if "num-cpus" in params else _quantity(limits.get("cpu", 0))
    gpus = float(params["num-gpus"]) if "num-gpus" in params else _quantity(limits.get("nvidia.com/gpu", 0))
    if gpus:
        res["GPU"] = gpus
    res |= _custom_resources(params.get("resources"))
    res |= {k: float(v) for k, v in (group.get("resources") or {}).items() if k not in ("CPU", "GPU")}
    note = (group.get("template", {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    return NodeType(name, res, count, float(note) if note else None)


def read_node_types(path: str | Path) -> list[NodeType]:
    """Node types of a cluster-launcher YAML or a KubeRay RayCluster/RayJob manifest, head first."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise PlanError(f"cluster config not found: {p}")
    raw = yaml.safe_load(p.read_text()) or {}
    if "available_node_types" in raw:
        head = raw.get("head_node_type")
        types = []
        for name, node in raw["available_node_types"].items():
            itype = (node.get("node_config") or {}).get("InstanceType", "")
            count = 1 if name == head else int(node.get("max_workers", raw.get("max_workers", 0)))
            types.append(NodeType(name, {k: float(v) for k, v in (node.get("resources") or {}).items()}, count,
                                  INSTANCE_GPU_GB.get(itype)))
        return sorted(types, key=lambda t: t.name != head)
    kind = raw.get("kind")
    if kind in ("RayCluster", "RayJob"):
        spec = raw["spec"] if kind == "RayCluster" else raw["spec"]["rayClusterSpec"]
        types = [_kuberay_group("head", spec["headGroupSpec"], 1)]
        for g in spec.get("workerGroupSpecs") or []:
            types.append(_kuberay_group(g["groupName"], g, int(g.get("maxReplicas", g.get("replicas", 0)))))
        return types
    raise PlanError(f"{p}: neither a cluster-launcher config (available_node_types) nor a KubeRay RayCluster/RayJob")


# ---- placement ---------------------------------------------------------------------------------------------
@dataclass(eq=False)  # identity: two empty GPUs are still two GPUs
class GpuLoad:
    node: str  # "<node type>#<index>"
    index: int
    capacity_gb: float
    used_fraction: float = 0.0
    entries: list[tuple[str, float]] = field(default_factory=list)  # (actor, GB)

    @property
    def used_gb(self) -> float:
        return sum(gb for _, gb in self.entries)


@dataclass(eq=False)
class Node:
    type: NodeType
    label: str
    free: dict[str, float]
    gpus: list[GpuLoad]

    def fits(self, bundle: dict[str, float]) -> bool:
        if any(self.free.get(k, 0.0) + 1e-9 < v for k, v in bundle.items() if k != "GPU"):
            return False
        return self._gpu_slots(bundle.get("GPU", 0.0)) is not None

    def _gpu_slots(self, g: float) -> list[GpuLoad] | None:
        if not g:
            return []
        if g < 1:  # Ray packs fractional requests onto a partly used GPU first
            cands = sorted((x for x in self.gpus if x.used_fraction + g <= 1 + 1e-9), key=lambda x: -x.used_fraction)
            return cands[:1] or None
        whole = [x for x in self.gpus if x.used_fraction == 0]
        return whole[: int(g)] if len(whole) >= g else None

    def take(self, bundle: dict[str, float]) -> list[GpuLoad]:
        slots = self._gpu_slots(bundle.get("GPU", 0.0)) or []
        for k, v in bundle.items():
            if k != "GPU":
                self.free[k] = self.free.get(k, 0.0) - v
        share = bundle.get("GPU", 0.0)
        for s in slots:
            s.used_fraction += share if share < 1 else 1.0
        return slots


@dataclass
class GroupPlan:
    name: str
    kind: str  # engine, trainer, reference, scorer
    bundles: list[dict[str, float]]
    strategy: str
    memory_gb: dict[str, float]  # per GPU of one actor (engine: per TP rank)
    per_gpu_gb: float
    nodes: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Plan:
    groups: list[GroupPlan]
    gpus: list[GpuLoad]
    problems: list[str]
    cluster: str = ""

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def total_gb(self) -> float:
        """GPU memory the whole job plans for: each group's per-GPU figure once per bundle that holds a GPU."""
        return sum(g.per_gpu_gb * sum(1 for b in g.bundles if b.get("GPU")) for g in self.groups)


def _empty_node(t: NodeType, index: int, default_gb: float) -> Node:
    label = f"{t.name}#{index}"
    return Node(t, label, dict(t.resources),
                [GpuLoad(label, i, t.gpu_gb or default_gb) for i in range(int(t.resources.get("GPU", 0)))])


def _holds_all(node: Node, bundles: list[dict]) -> bool:
    """Whether `node`, as it is now, could take every one of `bundles` (checked on a copy)."""
    trial = copy.deepcopy(node)
    for b in bundles:
        if not trial.fits(b):
            return False
        trial.take(b)
    return True


def _new_node(types: list[NodeType], counts: dict[str, int], bundles: list[dict], default_gb: float) -> Node | None:
    """Start a node of the first type (in file order) with capacity left whose empty node holds `bundles`."""
    for t in types:
        if counts.get(t.name, 0) < t.max_count:
            node = _empty_node(t, counts.get(t.name, 0), default_gb)
            if _holds_all(node, bundles):
                counts[t.name] = counts.get(t.name, 0) + 1
                return node
    return None


def place_group(nodes: list[Node], types: list[NodeType], counts: dict[str, int], bundles: list[dict],
                strategy: str, default_gb: float) -> list[tuple[Node, list[GpuLoad]]] | None:
    """Where each bundle lands: on one node (a running one, else a new one) when one holds them all, else (not
    STRICT_PACK) bundle by bundle over running and new nodes. None, with nothing taken, when they do not fit."""
    target = next((n for n in nodes if _holds_all(n, bundles)), None) or _new_node(types, counts, bundles,
                                                                                   default_gb)
    if target is not None:
        if target not in nodes:
            nodes.append(target)
        return [(target, target.take(b)) for b in bundles]
    if strategy == "STRICT_PACK":
        return None
    trial_nodes, trial_counts = copy.deepcopy(nodes), dict(counts)  # a group is placed whole or not at all
    out = []
    for b in bundles:
        node = next((n for n in trial_nodes if n.fits(b)), None) or _new_node(types, trial_counts, [b], default_gb)
        if node is None:
            return None
        if node not in trial_nodes:
            trial_nodes.append(node)
        out.append((node, node.take(b)))
    nodes[:] = trial_nodes
    counts.update(trial_counts)
    return out


def _sum_line(mem: dict[str, float]) -> str:
    return " + ".join(f"{k} {v:.1f}" for k, v in mem.items() if k not in ("kv_tokens", "max_model_len", "claimed"))


def plan_job(cfg: JobConfig, cluster: str | None = None, gpu_gb: float = DEFAULT_GPU_GB) -> Plan:
    """The capacity plan of a PPO job on a cluster's node types (or, without one, each group on its own GPU)."""
    from hh_ray.workers.placement import ppo_group_placements

    p, d = cfg.ppo, cfg.data
    placements = ppo_group_placements(p)
    if "ppo" not in cfg.stages or not any(pl.gpus for pl in placements.values()):
        return Plan([], [], [], str(cluster or ""))  # CPU jobs and jobs without PPO: nothing to plan on GPUs
    shape = model_shape(cfg.model.shape or cfg.model.policy, cfg.model.tokenizer_vocab_size)
    pm_ck = p.reward.pm_checkpoint
    pm_src = pm_ck if pm_ck and (Path(pm_ck) / "config.json").is_file() else ""
    pm_shape = model_shape(pm_src) if pm_src else shape
    seq, resp = d.max_prompt_tokens + p.rollout.max_new_tokens, p.rollout.max_new_tokens
    samples = p.prompts_per_step * p.rollout.samples_per_prompt
    minibatch = max(1, samples // p.algo.minibatches)

    groups = []
    for name, pl in placements.items():  # in the driver's creation order
        kind = "engine" if name.startswith("rollout-") else "trainer" if name.endswith("-trainer") else \
            name.removeprefix("pm-")
        g = GroupPlan(name, kind, pl.bundles, pl.strategy, {}, 0.0)
        if name == "reference":
            g.memory_gb = inference_memory(shape, "lm", MICRO_BATCH_ROWS, seq, resp)
        elif name == "pm-scorer":
            g.memory_gb = inference_memory(pm_shape, "scalar", SCORE_BATCH_ROWS, cfg.pm.max_tokens, 0)
        elif name.endswith("-trainer"):
            head, t = ("lm", p.policy_trainer) if name == "policy-trainer" else ("scalar", p.critic_trainer)
            rows = max(t.micro_batch_size, math.ceil(minibatch / (t.num_ranks * t.grad_accum_steps)))
            shard_tokens = math.ceil(samples / t.num_ranks) * seq
            fwd = min(t.forward_token_budget, shard_tokens) if t.forward_token_budget else shard_tokens
            g.memory_gb = trainer_memory(shape, head, t, rows, seq, resp, max(fwd, seq))
            g.note = (f"ZeRO-{t.zero_stage} over {t.num_ranks} rank(s), {rows} x {seq} tokens per micro batch, "
                      f"checkpointing {'on' if t.gradient_checkpointing else 'off'}")
        g.per_gpu_gb = sum(g.memory_gb.values())
        if pl.gpus == 0:  # CPU groups: host memory is not planned
            g.memory_gb, g.per_gpu_gb = {}, 0.0
        groups.append((g, pl))

    problems: list[str] = []
    if not cluster:
        for g, pl in groups:
            if pl.gpus > 0:
                _memory_of(g, shape, p, gpu_gb, seq)
                if g.per_gpu_gb > gpu_gb:
                    problems.append(f"{g.name} on a {gpu_gb:g} GB GPU: needs {g.per_gpu_gb:.1f} GB > {gpu_gb:g} GB "
                                    f"({_sum_line(g.memory_gb)})")
        return Plan([g for g, _ in groups], [], problems, "")
    types = read_node_types(cluster)
    counts: dict[str, int] = {}
    nodes: list[Node] = [_new_node(types[:1], counts, [], gpu_gb)]  # the head is up before anything is placed
    for g, pl in groups:
        placed = place_group(nodes, types, counts, g.bundles, g.strategy, gpu_gb)
        if placed is None:
            g.note = "not placed"
            have = ", ".join(f"{t.name} {t.resources} x{t.max_count}" for t in types)
            problems.append(f"group '{g.name}' cannot be placed: bundles {g.bundles} ({g.strategy}) do not fit "
                            f"what is left of the node types ({have})")
            continue
        g.nodes = sorted({node.label for node, _ in placed})
        node_gb = next((s.capacity_gb for _, slots in placed for s in slots), gpu_gb)
        _memory_of(g, shape, p, node_gb, seq)
        for rank, (node, slots) in enumerate(placed):
            for s in slots:
                s.entries.append((f"{g.name}[{rank}]", g.per_gpu_gb))
    gpus = [s for n in nodes for s in n.gpus if s.entries]
    for s in gpus:
        if s.used_gb > s.capacity_gb + 1e-6:
            who = ", ".join(f"{name} {gb:.1f} GB" for name, gb in s.entries)
            worst = max(s.entries, key=lambda e: e[1])[0].split("[")[0]
            g = next(x for x, _ in groups if x.name == worst)
            problems.append(f"{worst} on {s.node} GPU {s.index}: needs {s.used_gb:.1f} GB > {s.capacity_gb:g} GB "
                            f"({who}; {worst}: {_sum_line(g.memory_gb)})")
    for g, _ in groups:
        if g.kind == "engine" and g.memory_gb and g.memory_gb["kv_tokens"] < g.memory_gb["max_model_len"]:
            problems.append(f"{g.name}: KV cache {g.memory_gb['kv_cache']:.1f} GB holds {g.memory_gb['kv_tokens']} "
                            f"tokens, less than one {g.memory_gb['max_model_len']}-token sequence")
    return Plan([g for g, _ in groups], gpus, problems, str(cluster))


def _memory_of(g: GroupPlan, shape: ModelShape, p: PPOConfig, gpu_gb: float, seq: int) -> None:
    if g.kind != "engine":
        return
    g.memory_gb = engine_memory(shape, p.rollout.tensor_parallel_size, p.rollout.gpu_memory_utilization, gpu_gb,
                                seq + 8)
    g.per_gpu_gb = g.memory_gb["claimed"]
    g.note = f"TP {p.rollout.tensor_parallel_size}, {g.memory_gb['kv_tokens']} KV tokens per engine"


def format_plan(plan: Plan) -> str:
    lines = [f"capacity plan{' on ' + plan.cluster if plan.cluster else ' (no cluster: each group on its own GPU)'}"]
    if not plan.groups:
        lines.append("  no GPU groups (CPU-only job or no PPO stage): nothing to plan")
    for g in plan.groups:
        where = f" -> {', '.join(g.nodes)}" if g.nodes else ""
        mem = (f"{g.per_gpu_gb:.1f} GB/GPU ({_sum_line(g.memory_gb)})" if g.memory_gb
               else "CPU only" if not any(b.get("GPU") for b in g.bundles) else "")
        lines.append(f"  {g.name:16s} {len(g.bundles)} x {g.bundles[0]} {g.strategy}{where}")
        lines.append(f"  {'':16s} {mem}{'; ' + g.note if g.note else ''}")
    if plan.gpus:
        lines.append("per GPU:")
        for s in plan.gpus:
            who = ", ".join(f"{n} {gb:.1f}" for n, gb in s.entries)
            lines.append(f"  {s.node} GPU {s.index}: {s.used_gb:.1f} / {s.capacity_gb:g} GB ({who})")
    lines.append("fits" if plan.fits else "DOES NOT FIT:\n  " + "\n  ".join(plan.problems))
    return "\n".join(lines)


def plan_to_dict(plan: Plan) -> dict:
    return {"cluster": plan.cluster, "fits": plan.fits, "problems": plan.problems,
            "groups": [asdict(g) for g in plan.groups],
            "gpus": [asdict(s) | {"used_gb": s.used_gb} for s in plan.gpus]}


def resolve_cluster(cluster: str | None, cfg: JobConfig, config_path: str | None) -> str | None:
    """--cluster, else the job's `ray.cluster` (relative to the working folder or the job file's repository)."""
    name = cluster or cfg.ray.cluster
    if not name:
        return None
    if Path(name).is_file() or Path(name).is_absolute() or not config_path:
        return name
    beside = Path(config_path).resolve().parent.parent / name
    return str(beside) if beside.is_file() else name


@dataclass(frozen=True)
class MemoryAgainstPPO:
    """A critic-free job's planned GPU memory beside the same job's under PPO (with its critic trainer group)."""

    algorithm: str
    total_gb: float
    ppo_total_gb: float

    @property
    def ratio(self) -> float:
        return self.total_gb / self.ppo_total_gb

    def to_dict(self) -> dict:
        return asdict(self) | {"ratio": self.ratio}


def memory_against_ppo(cfg: JobConfig, plan: Plan, cluster: str | None,
                       gpu_gb: float = DEFAULT_GPU_GB) -> MemoryAgainstPPO | None:
    """For an algorithm without a critic, `plan`'s memory against PPO's; None for PPO itself and for jobs with
    nothing on GPUs."""
    if ALGORITHMS[cfg.ppo.algorithm].needs_critic or not plan.total_gb:
        return None
    ppo = plan_job(dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, algorithm="ppo")), cluster, gpu_gb)
    return MemoryAgainstPPO(cfg.ppo.algorithm, plan.total_gb, ppo.total_gb)


def run_plan(cfg: JobConfig, config_path: str | None, cluster: str | None, gpu_gb: float = DEFAULT_GPU_GB,
             as_json: bool = False) -> int:
    """`hh-ray plan`: print the plan (and, without a critic, its memory against PPO's); exit 0 when the job fits,
    2 when it does not."""
    cluster = resolve_cluster(cluster, cfg, config_path)
    plan = plan_job(cfg, cluster, gpu_gb)
    against = memory_against_ppo(cfg, plan, cluster, gpu_gb)
    if as_json:
        print(json.dumps(plan_to_dict(plan) | ({"memory_against_ppo": against.to_dict()} if against else {})))
    else:
        print(format_plan(plan))
        if against:
            print(f"{against.algorithm}, no critic: {against.total_gb:.1f} GB of GPU memory planned, "
                  f"{against.ratio:.2f} x PPO's {against.ppo_total_gb:.1f} GB for the same job")
    return 0 if plan.fits else 2


def refusal(plan: Plan) -> str | None:
    """One line for `hh-ray submit` to refuse an impossible job with: the first problem and how many more."""
    if plan.fits:
        return None
    more = f" (and {len(plan.problems) - 1} more; run hh-ray plan)" if len(plan.problems) > 1 else ""
    return f"job does not fit: {plan.problems[0]}{more}"
