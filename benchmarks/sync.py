"""`sync`: trainer -> engine weight sync in GB/s, against a local memcpy, the bare wire and vLLM's loader."""

from __future__ import annotations

from benchmarks.common import ONE_THREAD, Fixture, med
from benchmarks.device import seconds_each


def wire_seconds(fx: Fixture, nbytes: int, timeout_s: float) -> float:
    """Seconds of one bare broadcast of `nbytes` between two processes (gloo on CPU, NCCL on GPU)."""
    import ray
    import torch

    from hh_ray.workers.group import free_port

    @ray.remote(num_cpus=1)
    class Wire:
        def join(self, master, rank, device):
            from hh_ray.workers.weight_sync import make_group

            backend = "nccl" if device == "cuda" else "gloo"
            self.group, self.rank, self.device = make_group(tuple(master), rank, 2, backend, timeout_s), rank, device

        def broadcast(self, nbytes: int, repeats: int) -> float:
            from hh_ray.workers.weight_sync import _broadcast

            t = torch.empty(nbytes // 4, device=self.device)
            # NCCL's wait only orders the stream; seconds_each's device sync waits for the bytes
            return med(seconds_each(lambda: _broadcast(self.group, t).wait(), repeats - 1, 1, self.device))

    a, b = (Wire.options(num_gpus=fx.gpu, runtime_env=ONE_THREAD).remote() for _ in range(2))
    master = (ray.util.get_node_ip_address(), free_port())
    ray.get([a.join.remote(master, 0, fx.device), b.join.remote(master, 1, fx.device)])
    secs = ray.get([a.broadcast.remote(nbytes, 4), b.broadcast.remote(nbytes, 4)])[1]
    ray.kill(a), ray.kill(b)
    return secs


def memcpy_seconds(nbytes: int, device: str) -> float:
    """The local limit: one copy of `nbytes` within the same memory (median of 5)."""
    import torch

    src = torch.empty(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    return med(seconds_each(lambda: dst.copy_(src), 5, device=device))


def bench_sync(fx: Fixture, quick: bool) -> dict:
    """Weight sync trainer -> engine in GB/s, against an in-memory copy of the same bytes (the local limit).

    Also split out: the wire alone (a bare gloo broadcast between two processes) and the time the engine
    spends inside vLLM's loader, which on CPU repacks every linear layer for oneDNN. Bucket size and timeout
    are a PPO run's defaults. The full run adds SmolLM2-135M with a LoRA policy (rank 16, bf16 where the CPU has
    it): engines never see adapters (hh_ray.models.lora), so the trainer merges them and pushes whole weights.
    """
    from hh_ray.config import LoRAConfig, PPOConfig, RolloutConfig, TrainerConfig
    from hh_ray.models.forward import cpu_has_native_bf16
    from hh_ray.models.presets import resolve_pretrained
    from hh_ray.workers.rollout import RolloutGroup
    from hh_ray.workers.trainer import TrainerGroup

    ppo = PPOConfig()
    out = {}
    plain = TrainerConfig(cpus_per_rank=1.0, gpus_per_rank=fx.gpu)
    # (name, model folder, trainer config, dtype of both sides); the LoRA policy pushes its merged weights
    cases = [(name, fx.model(name), plain, "auto") for name in ("tiny", "small", "medium")]
    if not quick:
        bf16 = fx.device == "cuda" or cpu_has_native_bf16()
        lora = TrainerConfig(cpus_per_rank=1.0, gpus_per_rank=fx.gpu, lora=LoRAConfig(rank=16, alpha=32))
        cases.append(("smollm2_lora", resolve_pretrained("smollm2-135m"), lora, "bfloat16" if bf16 else "float32"))
    for name, path, trainer_cfg, dtype in cases:
        trainer = TrainerGroup(f"bench-sync-{name}", path, "causal_lm", trainer_cfg, dtype=dtype)
        rollout = RolloutGroup(path, RolloutConfig(cpus_per_engine=1.0, gpus_per_engine=fx.gpu, kv_cache_gb=0.25), 256,
                               name=f"bench-sync-engine-{name}", dtype=dtype)
        rollout.connect(trainer, ppo.sync.bucket_mb * 2**20, ppo.sync.timeout_s)
        rollout.ensure(1)  # warm-up: the engine's first reload
        runs = [rollout.ensure(v) for v in range(2, 5 if quick else 7)]
        rollout.shutdown()
        trainer.shutdown()
        nbytes = runs[0].bytes
        secs = med([r.seconds for r in runs])
        load = med([r.load_seconds for r in runs])
        out[name] = {"bytes": nbytes, "seconds": secs, "gb_per_s": nbytes / secs / 1e9,
                     "memcpy_gb_per_s": nbytes / memcpy_seconds(nbytes, fx.device) / 1e9,
                     "wire_gb_per_s": nbytes / wire_seconds(fx, nbytes, ppo.sync.timeout_s) / 1e9,
                     "engine_load_seconds": load, "engine_load_gb_per_s": nbytes / load / 1e9}
    out["gb_per_s"] = out["small"]["gb_per_s"]
    out["memcpy_gb_per_s"] = out["small"]["memcpy_gb_per_s"]
    return out
