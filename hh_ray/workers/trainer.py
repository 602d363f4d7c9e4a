"""DeepSpeed trainer groups: N Ray actors forming one torch.distributed world, one engine per rank.

The same group trains the SFT policy, the PM, and PPO's policy and critic; what differs is the model kind and
the objective named in each call. Losses are normalized by the unit count of the *whole* batch (tokens or
pairs), so N ranks with batch b take exactly the step one rank takes with batch N*b.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from hh_ray.workers.group import Worker, WorkerGroup, free_port, node_ip, shard, shard_batch

OBJECTIVES = ("sft", "pm", "policy", "value")
COMPLETE = "COMPLETE"  # marker written last into a checkpoint folder


def count_units(objective: str, batch: dict[str, list]) -> int:
    """What a batch's loss is averaged over: predicted tokens (sft), pairs (pm), response tokens (ppo)."""
    if objective == "sft":
        return sum(sum(m[1:]) for m in batch["loss_mask"])
    if objective == "pm":
        return len(batch["chosen"])
    if objective in ("policy", "value"):
        return sum(len(r) for r in batch["response"])
    raise ValueError(f"unknown objective '{objective}'; objectives: {', '.join(OBJECTIVES)}")


def ds_config(t, world: int, on_gpu: bool) -> dict:
    """DeepSpeed config from a TrainerConfig: ZeRO stage, batch geometry, AdamW, clipping, LR schedule."""
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum_steps,
        "train_batch_size": t.micro_batch_size * t.grad_accum_steps * world,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": on_gpu},
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


class TrainerWorker(Worker):
    """One rank: a DeepSpeed engine over an HF model of one kind (causal_lm, pm, value)."""

    def address(self) -> tuple[str, int]:
        return node_ip(), free_port()

    def setup(self, rank: int, world: int, master: tuple[str, int], model_path: str, kind: str, trainer_cfg,
              seed: int) -> dict:
        import deepspeed

        from hh_ray.data.tokenize import load_tokenizer
        from hh_ray.models.forward import load_model

        from hh_ray.workers.device import check_device, device_from_config, local_rank, ray_gpu_ids

        self.on_gpu = device_from_config(trainer_cfg.gpus_per_rank) == "cuda"
        check_device(self.on_gpu, torch.cuda.is_available(), f"trainer rank {rank}")
        gpu_index = local_rank(ray_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")) if self.on_gpu else 0
        os.environ.update({"MASTER_ADDR": master[0], "MASTER_PORT": str(master[1]), "RANK": str(rank),
                           "WORLD_SIZE": str(world), "LOCAL_RANK": str(gpu_index), "LOCAL_WORLD_SIZE": "1"})
        if self.on_gpu:
            torch.cuda.set_device(gpu_index)
        deepspeed.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo", auto_mpi_discovery=False)
        self.rank, self.world, self.kind, self.cfg = rank, world, kind, trainer_cfg
        config = ds_config(trainer_cfg, world, self.on_gpu)
        self._hf_ds = None
        if trainer_cfg.zero_stage == 3:  # must be alive while the model is built so weights load sharded
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(config)
        torch.manual_seed(seed)  # new heads (PM score, value) start identical on every rank
        model = load_model(model_path, kind, torch.bfloat16 if self.on_gpu else torch.float32)
        if trainer_cfg.gradient_checkpointing:  # keep one hidden state per layer; recompute the rest in backward
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        self.tokenizer = load_tokenizer(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        self.steps = 0
        return {"rank": rank, "parameters": sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel()
                                                for p in model.parameters()),
                "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False))}

    # ---- objectives -------------------------------------------------------------------------------------
    def _loss(self, objective: str, mb: dict[str, list], hyper: dict) -> tuple[torch.Tensor, dict[str, float]]:
        from hh_ray.algo.pm import pairwise_loss
        from hh_ray.algo.ppo import clipped_policy_loss, clipped_value_loss, masked_sum, pad_ragged
        from hh_ray.models.forward import collate, response_logprobs, response_values, sequence_scores

        model = self.engine
        dev = self.engine.device
        if objective == "sft":
            ids, att = collate(mb["input_ids"], self.pad_id)
            mask = collate(mb["loss_mask"], 0)[0].float()
            logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(dev), reduction="none")
            loss = masked_sum(nll, mask[:, 1:].to(dev))
            return loss, {"nll_sum": float(loss.detach())}
        if objective == "pm":
            n = len(mb["chosen"])
            scores = sequence_scores(model, mb["chosen"] + mb["rejected"], self.pad_id)
            per_pair, correct = pairwise_loss(scores[:n], scores[n:], hyper.get("margin", 0.0),
                                              hyper.get("center_coef", 0.0))
            pairs = torch.stack([scores[:n], scores[n:]], 1).detach().tolist()
            return per_pair.sum(), {"correct": float(correct.sum()), "score_sum": float(scores.detach().sum()),
                                    "scores": pairs}
        if objective == "policy":
            logp, mask, ent = response_logprobs(model, mb["prompt"], mb["response"], self.pad_id,
                                                hyper.get("temperature", 1.0), with_entropy=True)
            old = pad_ragged(mb["old_logprobs"])[0].to(dev)
            adv = pad_ragged(mb["advantages"])[0].to(dev)
            loss, stats = clipped_policy_loss(logp, old, adv, mask, hyper["clip_ratio"])
            ent_sum = masked_sum(ent, mask)
            loss = loss - hyper.get("entropy_coef", 0.0) * ent_sum
            return loss, {"clipped_tokens": float(stats["clipped_tokens"]),
                          "approx_kl_sum": float(stats["approx_kl_sum"]), "entropy_sum": float(ent_sum.detach())}
        if objective == "value":
            values, mask = response_values(model, mb["prompt"], mb["response"], self.pad_id)
            old_values, returns = pad_ragged(mb["old_values"])[0].to(dev), pad_ragged(mb["returns"])[0].to(dev)
            loss, stats = clipped_value_loss(values, old_values, returns, mask, hyper["value_clip"])
            return loss * hyper.get("value_coef", 1.0), {"value_clipped_tokens": float(stats["value_clipped_tokens"])}
        raise ValueError(f"unknown objective '{objective}'")

    def train(self, batch: dict[str, list], objective: str, total_units: int, hyper: dict) -> dict:
        """One optimizer step over this rank's shard, in grad_accum_steps micro batches."""
        t0 = time.perf_counter()
        self.engine.train()
        gas = self.cfg.grad_accum_steps
        n = len(next(iter(batch.values())))
        if n < gas:
            raise ValueError(f"rank {self.rank} got {n} samples for {gas} accumulation steps")
        scale = self.world * gas / max(total_units, 1)
        sums: dict[str, float] = {"loss_sum": 0.0}
        for mb in shard_batch(batch, gas):
            loss, stats = self._loss(objective, mb, hyper)
            self.engine.backward(loss * scale)
            self.engine.step()
            sums["loss_sum"] += float(loss.detach())
            for k, v in stats.items():
                if k != "scores":
                    sums[k] = sums.get(k, 0.0) + v
        self.steps += 1
        sums["lr"] = float(self.engine.get_lr()[0]) if self.engine.get_lr() else self.cfg.lr
        gn = self.engine.get_global_grad_norm()
        if gn is not None:
            sums["grad_norm"] = float(gn)
        sums["seconds"] = time.perf_counter() - t0
        return sums

    @torch.no_grad()
    def evaluate(self, batch: dict[str, list], objective: str, hyper: dict, micro_batch_size: int = 16) -> dict:
        """Loss sums (and PM scores, in batch order) without a step."""
        self.engine.eval()
        n = len(next(iter(batch.values())))
        sums: dict[str, Any] = {"loss_sum": 0.0, "scores": []}
        for mb in shard_batch(batch, max(1, -(-n // micro_batch_size))):
            if not next(iter(mb.values())):
                continue
            loss, stats = self._loss(objective, mb, hyper)
            sums["loss_sum"] += float(loss)
            sums["scores"] += stats.pop("scores", [])
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        return sums

    @torch.no_grad()
    def infer(self, what: str, prompts: list[list[int]], responses: list[list[int]], temperature: float = 1.0,
              num_batches: int = 1) -> list[list[float]]:
        """Per-token values (critic) or logprobs (policy) for a shard, as ragged lists, in micro batches of at
        most `forward_token_budget` padded tokens; at least `num_batches` forwards (equal on every ZeRO-3 rank)."""
        from hh_ray.algo.batching import token_budget_batches
        from hh_ray.models.forward import response_logprobs, response_values

        self.engine.eval()
        lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
        out: list[list[float] | None] = [None] * len(prompts)
        for idx in token_budget_batches(lengths, self.cfg.forward_token_budget, num_batches):
            # an empty group is a placeholder forward (one pad token) that keeps this ZeRO-3 rank in step
            p = [prompts[i] for i in idx] or [[self.pad_id]]
            r = [responses[i] for i in idx] or [[self.pad_id]]
            if what == "values":
                rows, _ = response_values(self.engine, p, r, self.pad_id)
            else:
                rows, _, _ = response_logprobs(self.engine, p, r, self.pad_id, temperature)
            for i, row, resp in zip(idx, rows.cpu(), r):  # a placeholder keeps nothing
                out[i] = row[: len(resp)].tolist()
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
        self.engine.save_checkpoint(str(staging), tag=tag, client_state=client_state | {"worker_steps": self.steps},
                                    save_latest=False)
        dist.barrier()
        if self.rank == 0:
            from hh_ray.workers.checkpoint import missing_checkpoint_files

            missing = missing_checkpoint_files(staging / tag, self.world, self.cfg.zero_stage, bf16=self.on_gpu)
            if missing:  # e.g. other nodes wrote their shards to a disk rank 0 cannot see
                raise RuntimeError(f"checkpoint {staging / tag} is missing {len(missing)} rank file(s) "
                                   f"({', '.join(missing[:4])}); is {root} on storage every node shares?")
            (staging / tag / COMPLETE).write_text(json.dumps({"time": time.time()}))
            final = rootp / tag
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / tag, final)
            shutil.rmtree(staging, ignore_errors=True)
            tmp = rootp / "latest.tmp"
            tmp.write_text(tag)
            os.replace(tmp, rootp / "latest")
        dist.barrier()

    def load_checkpoint(self, root: str, tag: str | None = None) -> dict:
        tag = tag or latest_tag(root)
        if tag is None:
            raise FileNotFoundError(f"no complete checkpoint under {root}")
        _, client = self.engine.load_checkpoint(root, tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        self.steps = client.get("worker_steps", 0)
        return client

    def export_hf(self, out_dir: str) -> None:
        """HF `save_pretrained` weights (ZeRO-3 shards gathered), written atomically by rank 0."""
        from hh_ray.models.presets import save_atomic

        if self.cfg.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            state = self.engine.module.state_dict()
        if self.rank == 0:
            save_atomic(self.engine.module, self.tokenizer, out_dir, state_dict=state)

    # ---- weight sync to rollout engines (rank 0 sends; every rank helps gather ZeRO-3 shards) -------------
    def weight_metas(self) -> list:
        from hh_ray.workers.weight_sync import ParamMeta

        return [ParamMeta(n, tuple(getattr(p, "ds_shape", p.shape)), str(p.dtype).removeprefix("torch."))
                for n, p in self.engine.module.named_parameters()]

    def init_weight_sync(self, master: tuple[str, int], world: int) -> None:
        from hh_ray.workers.weight_sync import make_group

        if self.rank == 0:
            self.sync_group = make_group(master, 0, world, "nccl" if self.on_gpu else "gloo")

    def broadcast_weights(self, bucket_bytes: int) -> dict:
        """Send every parameter in buckets; under ZeRO-3 all ranks gather each bucket's shards first."""
        import deepspeed

        from hh_ray.workers.weight_sync import BucketSender, buckets

        from hh_ray.workers.device import synchronized_clock

        t0 = synchronized_clock(self.on_gpu)
        params = dict(self.engine.module.named_parameters())
        sender = BucketSender(self.sync_group) if self.rank == 0 else None
        for bucket in buckets(self.weight_metas(), bucket_bytes):
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


def latest_tag(root: str) -> str | None:
    """The tag named by `root/latest` if that checkpoint is complete, else None."""
    p = Path(root) / "latest"
    if not p.is_file():
        return None
    tag = p.read_text().strip()
    return tag if (Path(root) / tag / COMPLETE).is_file() else None


class TrainerGroup:
    """N DeepSpeed ranks in one placement group. The driver hands it whole batches; it shards them."""

    def __init__(self, name: str, model_path: str, kind: str, trainer_cfg, seed: int = 0):
        self.cfg = trainer_cfg
        from hh_ray.workers.placement import trainer_placement

        self.group = WorkerGroup(TrainerWorker, trainer_cfg.num_ranks, name, trainer_cfg.cpus_per_rank,
                                 trainer_cfg.gpus_per_rank, placement=trainer_placement(trainer_cfg))
        import ray

        master = ray.get(self.group.actors[0].address.remote())
        infos = ray.get([a.setup.remote(r, len(self.group), master, model_path, kind, trainer_cfg, seed)
                         for r, a in enumerate(self.group.actors)])
        self.num_parameters = infos[0]["parameters"]
        self.gradient_checkpointing = infos[0]["gradient_checkpointing"]

    @property
    def world(self) -> int:
        return len(self.group)

    def train(self, batch: dict[str, list], objective: str, hyper: dict | None = None) -> dict:
        """One optimizer step on the whole batch; returns summed stats and `loss` per unit."""
        return self.train_async(batch, objective, hyper)()

    def train_async(self, batch: dict[str, list], objective: str, hyper: dict | None = None):
        """Start the step and return a callable that waits for it (lets policy and critic steps overlap)."""
        import ray

        n = len(next(iter(batch.values())))
        need = self.world * self.cfg.grad_accum_steps
        if n < need:
            raise ValueError(f"batch of {n} is smaller than ranks x grad_accum_steps = {need}")
        units = count_units(objective, batch)
        refs = self.group.call_each_async(
            "train", [((s, objective, units, hyper or {}), {}) for s in shard_batch(batch, self.world)])
        return lambda: _merge(ray.get(refs), units)

    def evaluate(self, batch: dict[str, list], objective: str, hyper: dict | None = None) -> dict:
        import ray

        units = count_units(objective, batch)
        shards = [s for s in shard_batch(batch, self.world) if next(iter(s.values()))]
        results = ray.get(self.group.call_each_async("evaluate", [((s, objective, hyper or {}), {}) for s in shards]))
        out = _merge(results, units)
        if objective == "pm":
            out["scores"] = [pair for r in results for pair in r["scores"]]
        return out

    def infer_async(self, what: str, prompts: list[list[int]], responses: list[list[int]],
                    temperature: float = 1.0) -> list:
        """Refs to per-token values/logprobs, sharded across ranks; concatenate the results in order."""
        from hh_ray.algo.batching import batch_count

        parts = list(zip(shard(prompts, self.world), shard(responses, self.world)))
        if self.cfg.zero_stage != 3:
            parts = [(p, r) for p, r in parts if p]
        budget = self.cfg.forward_token_budget
        # ZeRO-3 gathers parameters collectively in every forward: all ranks run the same number of forwards
        count = max((batch_count([len(a) + len(b) for a, b in zip(p, r)], budget) for p, r in parts), default=1)
        return [a.infer.remote(what, p, r, temperature, count) for a, (p, r) in zip(self.group.actors, parts)]

    def infer(self, what: str, prompts: list[list[int]], responses: list[list[int]], temperature: float = 1.0):
        import ray

        return [row for part in ray.get(self.infer_async(what, prompts, responses, temperature)) for row in part]

    def save_checkpoint(self, root: str, tag: str, client_state: dict | None = None) -> None:
        self.group.call("save_checkpoint", root, tag, client_state or {})

    def load_checkpoint(self, root: str, tag: str | None = None) -> dict:
        return self.group.call("load_checkpoint", root, tag)[0]

    def export_hf(self, out_dir: str) -> None:
        self.group.call("export_hf", out_dir)

    def weight_metas(self) -> list:
        return self.group.call("weight_metas")[0]

    def address(self) -> tuple[str, int]:
        import ray

        return ray.get(self.group.actors[0].address.remote())

    def param_vector(self) -> torch.Tensor:
        return self.group.call("param_vector")[0]

    def peak_memory_mb(self) -> dict[str, float]:
        return self.group.peak_memory_mb()

    def shutdown(self) -> None:
        self.group.shutdown()


def _merge(results: list[dict], units: int) -> dict:
    out: dict[str, float] = {}
    for r in results:
        for k, v in r.items():
            if k in ("scores",):
                continue
            if k in ("lr", "grad_norm", "seconds"):
                out[k] = max(out.get(k, float("-inf")), v) if k == "seconds" else v
            else:
                out[k] = out.get(k, 0.0) + v
    out["units"] = units
    out["loss"] = out.get("loss_sum", 0.0) / max(units, 1)
    return out
