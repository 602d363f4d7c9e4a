"""DeepSpeed trainer groups: N Ray actors forming one torch.distributed world, one engine per rank.

The same group trains the SFT policy, the PM, and PPO's policy and critic; what differs is the model kind and
the objective object passed with each batch (`hh_ray.models.objectives`). Losses are normalized by the unit
count of the *whole* batch (tokens or pairs), so N ranks with batch b take exactly the step one rank takes with
batch N*b.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hh_ray.algo.batch import PairBatch, SequenceBatch, TokenBatch, batch_size, split
from hh_ray.data.tokenize import load_tokenizer
from hh_ray.files import write_text_atomic
from hh_ray.models.forward import load_model, resolve_dtype
from hh_ray.models.lora import add_lora, is_lora, plain_weights
from hh_ray.models.objectives import StepResult, merge_results, probe_tokens
from hh_ray.models.prefix import FrozenPrefix, frozen_layers, recording, reusing
from hh_ray.models.presets import save_atomic
from hh_ray.workers.checkpoint import checkpoint_problem, latest_tag, missing_checkpoint_files, write_manifest
from hh_ray.workers.device import check_device, device_from_config, local_rank, ray_gpu_ids, synchronized_clock
from hh_ray.workers.group import (
    GroupOwner,
    Worker,
    WorkerGroup,
    exclusive_build,
    extensions_dir,
    free_port,
    get_all,
    node_ip,
)
from hh_ray.workers.weight_sync import BucketSender, ParamMeta, buckets, make_group

if TYPE_CHECKING:
    from hh_ray.config import TrainerConfig


@dataclass(frozen=True)
class RankInfo:
    parameters: int
    gradient_checkpointing: bool
    trainable_parameters: int


def filler(batch_type: type, pad_id: int):
    """A one-sample, one-token batch of `batch_type`: the forward a rank runs when its shard is used up."""
    if batch_type is PairBatch:
        return PairBatch([[pad_id]], [[pad_id]])
    if batch_type is TokenBatch:
        return TokenBatch([[pad_id, pad_id]], [[0, 0]])
    return SequenceBatch([[pad_id]], [[pad_id]])


def forward_micro_batches(shard_tokens: list[list[int]], max_samples: int, token_budget: int) -> int:
    """How many forward calls every rank makes: enough that no rank's call exceeds either limit."""
    def calls(tokens: list[int]) -> int:
        by_samples = -(-len(tokens) // max(max_samples, 1))
        by_tokens = -(-sum(tokens) // max(token_budget, 1))
        return max(by_samples, by_tokens, 1)
    return max(calls(t) for t in shard_tokens)


def ds_config(t, world: int, dtype: torch.dtype) -> dict:
    """DeepSpeed config from a TrainerConfig: ZeRO stage, batch geometry, AdamW, clipping, LR schedule."""
    on_gpu = t.gpus_per_rank > 0
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum_steps,
        "train_batch_size": t.micro_batch_size * t.grad_accum_steps * world,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW (its fused kernel on GPU): DeepSpeed's own fused/CPU Adam would JIT-compile first
            # (~80 s on CPU, a CUDA build on every fresh GPU node)
            "params": {"lr": t.lr, "weight_decay": t.weight_decay, "torch_adam": True, "adam_w_mode": True}
            | ({"fused": True} if on_gpu else {}),
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if t.total_steps:
        cfg["scheduler"] = {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": t.lr, "warmup_num_steps": max(t.warmup_steps, 1),
            "total_num_steps": t.total_steps, "warmup_type": "linear"}}
    elif t.warmup_steps:
        cfg["scheduler"] = {"type": "WarmupLR", "params": {
            "warmup_min_lr": 0.0, "warmup_max_lr": t.lr, "warmup_num_steps": t.warmup_steps, "warmup_type": "linear"}}
    if t.zero_stage == 3:  # prefetch and persistence at 0 made every layer wait for its gather (33-45% slower)
        cfg["zero_optimization"] |= {"stage3_param_persistence_threshold": t.zero3_param_persistence_threshold,
                                     "stage3_prefetch_bucket_size": t.zero3_prefetch_bucket_size,
                                     "stage3_max_live_parameters": t.zero3_max_live_parameters}
    return cfg


def load_jit_ops() -> None:
    """Build or load the op DeepSpeed JIT-compiles at init (its CPU shared-memory collectives) under
    `exclusive_build`, so a build killed midway never leaves later trainers waiting; DeepSpeed's own load in
    `init_distributed` then finds the op loaded in this process. GPU accelerators have no such op."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return
    root = extensions_dir()
    os.environ["TORCH_EXTENSIONS_DIR"] = str(root)  # where torch builds: the folder the flock guards
    with exclusive_build(root):
        builder.load()


class TrainerWorker(Worker):
    """One rank: a DeepSpeed engine over an HF model of one kind (causal_lm, pm, value)."""

    def address(self) -> tuple[str, int]:
        return node_ip(), free_port()

    def setup(self, rank: int, world: int, master: tuple[str, int], model_path: str, kind: str,
              trainer_cfg: TrainerConfig, seed: int, dtype: str = "auto") -> RankInfo:
        """Join the group's torch.distributed world and build the engine."""
        import deepspeed

        load_jit_ops()

        self.on_gpu = device_from_config(trainer_cfg.gpus_per_rank) == "cuda"
        check_device(self.on_gpu, torch.cuda.is_available(), f"trainer rank {rank}")
        gpu_index = local_rank(ray_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")) if self.on_gpu else 0
        os.environ.update({"MASTER_ADDR": master[0], "MASTER_PORT": str(master[1]), "RANK": str(rank),
                           "WORLD_SIZE": str(world), "LOCAL_RANK": str(gpu_index), "LOCAL_WORLD_SIZE": "1"})
        if self.on_gpu:
            torch.cuda.set_device(gpu_index)
        deepspeed.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo", auto_mpi_discovery=False)
        self.rank, self.world, self.cfg = rank, world, trainer_cfg
        self.dtype = resolve_dtype(dtype, self.on_gpu)
        config = ds_config(trainer_cfg, world, self.dtype)
        self._hf_ds = None
        if trainer_cfg.zero_stage == 3:  # must be alive while the model is built so weights load sharded
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(config)
        torch.manual_seed(seed)  # new heads (PM score, value) start identical on every rank
        model = load_model(model_path, kind, self.dtype)
        if trainer_cfg.gradient_checkpointing:  # keep one hidden state per layer; recompute the rest in backward
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if trainer_cfg.lora.rank:
            model = add_lora(model, trainer_cfg.lora, kind)
        self.lora = is_lora(model)
        lora = trainer_cfg.lora
        frozen = frozen_layers(model.config.num_hidden_layers, lora.rank, lora.top_layers, trainer_cfg.zero_stage)
        self.prefix = FrozenPrefix(frozen) if frozen and kind != "pm" else None  # PM pairs are never probed first
        self.tokenizer = load_tokenizer(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        trainable = [p for p in model.parameters() if p.requires_grad]  # the optimizer holds state for these alone
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=config)
        self.steps = 0
        return RankInfo(sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters()),
                        bool(getattr(model, "is_gradient_checkpointing", False)), sum(p.numel() for p in trainable))

    def train(self, batch, objective, total_units: int) -> StepResult:
        """One optimizer step over this rank's shard, in grad_accum_steps micro batches."""
        t0 = time.perf_counter()
        self.engine.train()
        gas = self.cfg.grad_accum_steps
        if batch_size(batch) < gas:
            raise ValueError(f"rank {self.rank} got {batch_size(batch)} samples for {gas} accumulation steps")
        scale = self.world * gas / max(total_units, 1)
        lr = self.engine.get_lr()  # the rate this step applies (the scheduler moves it on after the step)
        sums: dict[str, float] = {"loss": 0.0}
        reused = self.prefix.reused if self.prefix else 0
        for mb in split(batch, gas):
            with reusing(self.prefix):
                loss, stats = objective.loss(self.engine, mb, self.pad_id)
            self.engine.backward(loss * scale)
            self.engine.step()
            sums["loss"] += float(loss.detach())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        sums["prefix_reused"] = float(self.prefix.reused - reused) if self.prefix else 0.0
        self.steps += 1
        gn = self.engine.get_global_grad_norm()
        return StepResult(sums, objective.units(batch), float(lr[0]) if lr else self.cfg.lr,
                          float(gn) if gn is not None else float("nan"), time.perf_counter() - t0)

    @torch.no_grad()
    def forward(self, batch, probe, micro_batches: int) -> list:
        """A probe over this rank's shard in exactly `micro_batches` forward calls (one output per sample).

        Under ZeRO-3 every forward gathers parameters from all ranks, so every rank must run the same number of
        forwards: the group decides the count, and a rank whose shard runs out runs a one-token filler.
        """
        self.engine.eval()
        out: list = []
        with recording(self.prefix):  # what a training step on these samples can start from
            for mb in split(batch, micro_batches):
                if batch_size(mb):
                    out += probe(self.engine, mb, self.pad_id)
                elif self.cfg.zero_stage == 3:
                    probe(self.engine, filler(type(batch), self.pad_id), self.pad_id)
        return out

    # ---- state ------------------------------------------------------------------------------------------
    def save_checkpoint(self, root: str, tag: str, client_state: dict) -> None:
        """DeepSpeed checkpoint written under a staging name, renamed into place by rank 0 once complete."""
        import torch.distributed as dist

        rootp = Path(root)
        staging = rootp / f".staging-{tag}"
        if self.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        # with adapters the frozen base is the run's starting model, already on disk: only what trains is saved
        self.engine.save_checkpoint(str(staging), tag=tag, client_state=client_state | {"worker_steps": self.steps},
                                    save_latest=False, exclude_frozen_parameters=self.lora)
        dist.barrier()
        if self.rank == 0:
            missing = missing_checkpoint_files(staging / tag, self.world, self.cfg.zero_stage,
                                               bf16=self.dtype == torch.bfloat16)
            if missing:  # e.g. other nodes wrote their shards to a disk rank 0 cannot see
                raise RuntimeError(f"checkpoint {staging / tag} is missing {len(missing)} rank file(s) "
                                   f"({', '.join(missing[:4])}); is {root} on storage every node shares?")
            write_manifest(staging / tag)
            final = rootp / tag
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / tag, final)
            shutil.rmtree(staging, ignore_errors=True)
            write_text_atomic(rootp / "latest", tag)
        dist.barrier()

    def load_checkpoint(self, root: str, tag: str | None = None) -> dict:
        tag = tag or latest_tag(root)
        if tag is None:
            raise FileNotFoundError(f"no intact checkpoint under {root}")
        problem = checkpoint_problem(root, tag)
        if problem:
            raise FileNotFoundError(f"checkpoint {root}/{tag} cannot be loaded: {problem}")
        _, client = self.engine.load_checkpoint(root, tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=True, load_module_strict=not self.lora)
        self.steps = client.get("worker_steps", 0)
        return client

    def export_hf(self, out_dir: str) -> None:
        """HF `save_pretrained` weights (ZeRO-3 shards gathered; adapters merged), written atomically by rank 0."""
        module = self.engine.module
        if self.lora:
            state, module = dict(plain_weights(module)), module.get_base_model()
        elif self.cfg.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            state = module.state_dict()
        if self.rank == 0:
            save_atomic(module, self.tokenizer, out_dir, state_dict=state)

    # ---- weight sync to rollout engines (rank 0 sends; every rank helps gather ZeRO-3 shards) -------------
    def init_weight_sync(self, master: tuple[str, int], world: int, timeout_s: float) -> list:
        """Rank 0 joins the engines' sync group; every rank returns the parameter layout the engines receive."""
        if self.rank == 0:
            self.sync_group = make_group(master, 0, world, "nccl" if self.on_gpu else "gloo", timeout_s)
        self.sync_metas = [ParamMeta(n, tuple(getattr(p, "ds_shape", p.shape)), str(p.dtype).removeprefix("torch."))
                           for n, p in plain_weights(self.engine.module)]
        return self.sync_metas

    def broadcast_weights(self, bucket_bytes: int) -> dict:
        """Send every parameter in buckets; under ZeRO-3 all ranks gather each bucket's shards first."""
        import deepspeed

        t0 = synchronized_clock(self.on_gpu)
        params = dict(plain_weights(self.engine.module))  # adapters merged: engines load plain weights
        sender = BucketSender(self.sync_group) if self.rank == 0 else None
        for bucket in buckets(self.sync_metas, bucket_bytes):
            tensors = [params[m.name] for m in bucket]
            with deepspeed.zero.GatheredParameters(tensors, enabled=self.cfg.zero_stage == 3):
                if sender:
                    sender.send(tensors)
        if sender:
            sender.flush()
        return {"bytes": sender.sent if sender else 0, "seconds": synchronized_clock(self.on_gpu) - t0}

    def param_vector(self) -> torch.Tensor:
        """All parameters flattened in order (gathered under ZeRO-3); for equivalence tests and digests."""
        import deepspeed

        params = list(self.engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=self.cfg.zero_stage == 3):
            return torch.cat([p.detach().float().reshape(-1).cpu() for p in params])


class TrainerGroup(GroupOwner):
    """N DeepSpeed ranks in one placement group. The driver hands it whole typed batches; it shards them."""

    def __init__(self, name: str, model_path: str, kind: str, trainer_cfg: TrainerConfig, seed: int = 0,
                 dtype: str = "auto"):
        import ray

        from hh_ray.workers.placement import trainer_placement

        self.cfg, self.kind = trainer_cfg, kind
        self.group = WorkerGroup(TrainerWorker, trainer_cfg.num_ranks, name, trainer_cfg.cpus_per_rank,
                                 trainer_cfg.gpus_per_rank, placement=trainer_placement(trainer_cfg))
        master = ray.get(self.group.actors[0].address.remote())
        infos = get_all([a.setup.remote(r, len(self.group), master, model_path, kind, trainer_cfg, seed, dtype)
                         for r, a in enumerate(self.group.actors)])
        self.num_parameters = infos[0].parameters
        self.gradient_checkpointing = infos[0].gradient_checkpointing
        self.trainable_parameters = infos[0].trainable_parameters

    @property
    def world(self) -> int:
        return len(self.group)

    def train(self, batch, objective) -> StepResult:
        """One optimizer step on the whole batch."""
        return self.train_async(batch, objective)()

    def train_async(self, batch, objective):
        """Start the step and return a callable that waits for it (lets policy and critic steps overlap)."""
        if objective.kind != self.kind:
            raise ValueError(f"{type(objective).__name__} needs a {objective.kind} model; this group holds {self.kind}")
        need = self.world * self.cfg.grad_accum_steps
        if batch_size(batch) < need:
            raise ValueError(f"batch of {batch_size(batch)} is smaller than ranks x grad_accum_steps = {need}")
        return self.group.fan_out("train", batch, objective, objective.units(batch), join=merge_results)

    def forward_async(self, batch, probe):
        """Start a probe on every rank (each on its shard, all with the same number of forward calls)."""
        calls = forward_micro_batches([probe_tokens(s) for s in split(batch, self.world)],
                                      self.cfg.forward_micro_batch_size, self.cfg.forward_token_budget)
        return self.group.fan_out("forward", batch, probe, calls)

    def forward(self, batch, probe) -> list:
        """One output per sample, in batch order."""
        return self.forward_async(batch, probe)()

    def save_checkpoint(self, root: str, tag: str, client_state: dict | None = None) -> None:
        self.group.call("save_checkpoint", root, tag, client_state or {})

    def load_checkpoint(self, root: str, tag: str | None = None) -> dict:
        return self.group.call("load_checkpoint", root, tag)[0]

    def export_hf(self, out_dir: str) -> None:
        self.group.call("export_hf", out_dir)

    def param_vector(self) -> torch.Tensor:
        return self.group.call("param_vector")[0]
