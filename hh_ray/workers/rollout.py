"""The rollout generator: Ray actors each holding a real vLLM engine, and the weight-sync extension.

An engine reports the policy version it holds; `generate` refuses to run with a version the driver did not
ask for, so a stale policy never produces PPO samples silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hh_ray.data.hh import HUMAN
from hh_ray.workers.group import WorkerGroup, shard


class StaleWeightsError(RuntimeError):
    """An engine was asked to generate with a policy version it does not hold."""


class WeightSyncExtension:
    """Mixed into every vLLM worker (`worker_extension_cls`); called through `collective_rpc`."""

    def hh_init_weight_sync(self, master, rank_offset: int, world: int, backend: str) -> None:
        from hh_ray.workers.weight_sync import make_group

        self.hh_sync_group = make_group(tuple(master), rank_offset + self.rank, world, backend)

    def hh_receive_weights(self, metas, bucket_bytes: int) -> None:
        from hh_ray.workers.weight_sync import receive_buckets

        device = "cpu" if str(self.device).startswith("cpu") else str(self.device)
        self.reload_weights(weights_iterator=receive_buckets(self.hh_sync_group, metas, bucket_bytes, device))

    def hh_weight_sum(self) -> float:
        """A cheap fingerprint of the loaded weights (tests check that a sync changed them)."""
        model = self.model_runner.get_model()
        return float(sum(p.detach().double().sum() for p in model.parameters()))


@dataclass
class Sampling:
    """What the driver asks of generation; engines map it onto vLLM's SamplingParams."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    n: int = 1


class RolloutWorker:
    """One vLLM engine (tensor-parallel inside when asked) serving prompt token ids."""

    def __init__(self, model_path: str, rollout_cfg, max_model_len: int, seed: int = 0):
        import torch
        from vllm import LLM

        self.on_gpu = torch.cuda.is_available()
        kwargs = dict(
            model=model_path, tokenizer=model_path, seed=seed, enforce_eager=True,
            tensor_parallel_size=rollout_cfg.tensor_parallel_size, max_model_len=max_model_len,
            worker_extension_cls="hh_ray.workers.rollout.WeightSyncExtension",
            logprobs_mode="processed_logprobs",  # logprobs after temperature, as the trainer computes them
            dtype="bfloat16" if self.on_gpu else "float32",
        )
        if self.on_gpu:
            kwargs["gpu_memory_utilization"] = rollout_cfg.gpu_memory_utilization
        else:
            kwargs["kv_cache_memory_bytes"] = int(rollout_cfg.kv_cache_gb * 2**30)
            # vLLM 0.32 on CPU: a chunked prefill of a seeded request rewinds its generator with set_offset,
            # which CPU generators lack ("CPU Generator does not use offset"). Whole prefills avoid that path.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(8192, max_model_len)
        self.llm = LLM(**kwargs)
        tok = self.llm.get_tokenizer()
        self.eos = tok.eos_token_id
        self.version = 0
        self.tokens_generated = 0

    def policy_version(self) -> int:
        return self.version

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, version: int, seeds: list[int]) -> list[dict]:
        """Per prompt, `n` samples: response ids, their logprobs, text and why generation stopped."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if version != self.version:
            raise StaleWeightsError(f"engine holds policy version {self.version}, driver asked for {version}")
        params = [
            SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_new_tokens, logprobs=0, seed=seed, stop=[HUMAN],
                           stop_token_ids=[self.eos], include_stop_str_in_output=True, detokenize=True)
            for seed in seeds
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        results = []
        for out in outs:
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [lp[t].logprob for lp, t in zip(c.logprobs, ids)]
                results.append({"response": ids, "logprobs": lps, "text": c.text, "finish": c.finish_reason})
        self.tokens_generated += sum(len(r["response"]) for r in results)
        self.last_seconds = time.perf_counter() - t0
        return results

    def prompt_logprobs(self, sequences: list[list[int]], start: list[int]) -> list[list[float]]:
        """log p(token | prefix) of each token from index `start` on, by the engine's own forward (tests)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences], params, use_tqdm=False)
        return [[o.prompt_logprobs[i][s[i]].logprob for i in range(st, len(s))]
                for o, s, st in zip(outs, sequences, start)]

    def init_weight_sync(self, master, rank_offset: int, world: int) -> None:
        backend = "nccl" if self.on_gpu else "gloo"
        self.llm.collective_rpc("hh_init_weight_sync", args=(tuple(master), rank_offset, world, backend))

    def receive_weights(self, metas, bucket_bytes: int, version: int) -> float:
        t0 = time.perf_counter()
        self.llm.collective_rpc("hh_receive_weights", args=(metas, bucket_bytes))
        self.llm.reset_prefix_cache()  # cached KV was computed by the old weights
        self.version = version
        return time.perf_counter() - t0

    def weight_sum(self) -> float:
        return self.llm.collective_rpc("hh_weight_sum")[0]


class RolloutGroup:
    """K vLLM engines; prompts are split evenly across them and results come back in prompt order."""

    def __init__(self, model_path: str, rollout_cfg, max_model_len: int, seed: int = 0, name: str = "rollout"):
        self.cfg = rollout_cfg
        self.max_model_len = max_model_len
        self.model_path, self.seed = model_path, seed
        cpus = rollout_cfg.cpus_per_engine
        gpus = rollout_cfg.gpus_per_engine * rollout_cfg.tensor_parallel_size
        self.group = WorkerGroup(RolloutWorker, rollout_cfg.num_engines, name, cpus, gpus,
                                 actor_kwargs=[dict(model_path=model_path, rollout_cfg=rollout_cfg,
                                                    max_model_len=max_model_len, seed=seed + i)
                                               for i in range(rollout_cfg.num_engines)])
        self.version = 0

    @property
    def engines(self) -> list:
        return self.group.actors

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seeds: list[int]) -> list[dict]:
        """n samples per prompt, flattened prompt-major: result[i * n + j] is sample j of prompt i."""
        import ray

        parts = [(p, s) for p, s in zip(shard(prompt_ids, len(self.engines)), shard(seeds, len(self.engines))) if p]
        refs = [e.generate.remote(p, sampling, self.version, s) for e, (p, s) in zip(self.engines, parts)]
        return [r for part in ray.get(refs) for r in part]

    def sync_world(self) -> int:
        return 1 + len(self.engines) * self.cfg.tensor_parallel_size

    def init_weight_sync_async(self, master) -> list:
        tp = self.cfg.tensor_parallel_size
        return [e.init_weight_sync.remote(master, 1 + i * tp, self.sync_world()) for i, e in enumerate(self.engines)]

    def receive_weights_async(self, metas, bucket_bytes: int, version: int) -> list:
        self.version = version
        return [e.receive_weights.remote(metas, bucket_bytes, version) for e in self.engines]

    def shutdown(self) -> None:
        self.group.shutdown()


def sync_weights(trainer, rollout: RolloutGroup, version: int, bucket_bytes: int, metas=None) -> dict:
    """Broadcast the policy from trainer rank 0 into every engine, then mark them with `version`."""
    import ray

    metas = metas or trainer.weight_metas()
    t0 = time.perf_counter()
    send = trainer.group.call_async("broadcast_weights", bucket_bytes)
    recv = rollout.receive_weights_async(metas, bucket_bytes, version)
    stats = ray.get(send)[0]
    ray.get(recv)
    return {"sync_seconds": time.perf_counter() - t0, "sync_bytes": stats["bytes"]}


def connect_weight_sync(trainer, rollout: RolloutGroup) -> None:
    """(Re)build the private group joining trainer rank 0 and every engine worker (after engines change)."""
    import ray

    master = trainer.address()
    world = rollout.sync_world()
    refs = trainer.group.call_async("init_weight_sync", master, world) + rollout.init_weight_sync_async(master)
    ray.get(refs)

