"""The rollout generator: Ray actors each holding a real vLLM engine, and the weight-sync extension.

An engine reports the policy version it holds; `generate` refuses to run with a version the driver did not
ask for, so a stale policy never produces PPO samples silently.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hh_ray.algo.batch import cut
from hh_ray.data.hh import HUMAN
from hh_ray.workers.device import device_from_config
from hh_ray.workers.group import Worker, WorkerGroup, largest_peaks
from hh_ray.workers.placement import engine_env_to_clear, engine_placement, per_request_seeds, vllm_engine_kwargs

if TYPE_CHECKING:
    from hh_ray.config import RolloutConfig


class StaleWeightsError(RuntimeError):
    """An engine was asked to generate with a policy version it does not hold."""


class NoEnginesError(RuntimeError):
    """Every engine died before the batch was done; the caller starts new ones (`replenish`) and retries."""


class WeightSyncExtension:
    """Mixed into every vLLM worker (`worker_extension_cls`); called through `collective_rpc`."""

    def hh_init_weight_sync(self, master, rank_offset: int, world: int, backend: str, timeout_s: float) -> None:
        from hh_ray.workers.weight_sync import make_group

        self.hh_sync_group = make_group(tuple(master), rank_offset + self.rank, world, backend, timeout_s)

    def hh_receive_weights(self, metas, bucket_bytes: int) -> dict:
        from hh_ray.workers.device import synchronized_clock
        from hh_ray.workers.weight_sync import receive_buckets

        device = "cpu" if str(self.device).startswith("cpu") else str(self.device)
        on_gpu = device != "cpu"
        stats: dict = {}
        t0 = synchronized_clock(on_gpu)
        self.reload_weights(weights_iterator=receive_buckets(self.hh_sync_group, metas, bucket_bytes, device, stats))
        return {"seconds": synchronized_clock(on_gpu) - t0, "wait_seconds": stats.get("wait_seconds", 0.0)}

    def hh_weight_sum(self) -> float:
        """A cheap fingerprint of the loaded weights (tests check that a sync changed them)."""
        model = self.model_runner.get_model()
        return float(sum(p.detach().double().sum() for p in model.parameters()))


@dataclass
class Sample:
    """One generated response: token ids, the engine's sampling logprobs of them, text, why it stopped."""

    response: list[int]
    logprobs: list[float]
    text: str
    finish: str  # "stop" (end of turn or eos) or "length" (cut at max_new_tokens)


@dataclass
class Sampling:
    """What the driver asks of generation; engines map it onto vLLM's SamplingParams."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    n: int = 1
    ignore_eos: bool = False  # exactly max_new_tokens per sample, no end of turn (throughput measurements)


class RolloutWorker(Worker):
    """One vLLM engine (tensor-parallel inside when asked) serving prompt token ids."""

    def __init__(self, model_path: str, rollout_cfg: RolloutConfig, max_model_len: int, seed: int = 0,
                 dtype: str = "auto"):
        import os

        from vllm import LLM

        # from the config, not torch.cuda: at tensor-parallel > 1 this actor holds no GPU, its vLLM workers do
        self.on_gpu = device_from_config(rollout_cfg.gpus_per_engine) == "cuda"
        self.per_request_seeds = per_request_seeds(rollout_cfg, self.on_gpu)
        for key in engine_env_to_clear(rollout_cfg, self.on_gpu):
            os.environ.pop(key, None)
        self.llm = LLM(**vllm_engine_kwargs(rollout_cfg, self.on_gpu, model_path, max_model_len, seed, dtype))
        tok = self.llm.get_tokenizer()
        self.eos = tok.eos_token_id
        self.version = 0

    def policy_version(self) -> int:
        return self.version

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, version: int, seeds: list[int]) -> list[Sample]:
        """Per prompt, `n` samples: response ids, their logprobs, text and why generation stopped."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if version != self.version:
            raise StaleWeightsError(f"engine holds policy version {self.version}, driver asked for {version}")
        params = [
            SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_new_tokens, logprobs=0,
                           seed=seed if self.per_request_seeds else None,
                           stop=None if sampling.ignore_eos else [HUMAN], ignore_eos=sampling.ignore_eos,
                           stop_token_ids=None if sampling.ignore_eos else [self.eos],
                           include_stop_str_in_output=True, detokenize=True)
            for seed in seeds
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        results = []
        for out in outs:
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [lp[t].logprob for lp, t in zip(c.logprobs, ids)]
                results.append(Sample(ids, lps, c.text, c.finish_reason))
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

    def init_weight_sync(self, master, rank_offset: int, world: int, timeout_s: float) -> None:
        backend = "nccl" if self.on_gpu else "gloo"
        self.llm.collective_rpc("hh_init_weight_sync", args=(tuple(master), rank_offset, world, backend, timeout_s))

    def receive_weights(self, metas, bucket_bytes: int, version: int) -> dict:
        """Load the broadcast weights; `wait_seconds` is time the engine sat waiting for bytes, the rest loading."""
        stats = self.llm.collective_rpc("hh_receive_weights", args=(metas, bucket_bytes))[0]
        self.llm.reset_prefix_cache()  # cached KV was computed by the old weights
        self.version = version
        return stats | {"version": self.version}  # the version it now holds, checked by the sender

    def weight_sum(self) -> float:
        return self.llm.collective_rpc("hh_weight_sum")[0]


class RolloutGroup:
    """Elastic vLLM engines, each in its own placement group so a new one can land on a new node.

    `generate` hands the prompts out in chunks, one per engine, and re-queues a chunk whose engine died, so
    every prompt's samples come back exactly once and in prompt order.
    """

    def __init__(self, model_path: str, rollout_cfg: RolloutConfig, max_model_len: int, seed: int = 0,
                 name: str = "rollout", placement_timeout_s: float = 120.0, dtype: str = "auto"):
        self.cfg, self.dtype = rollout_cfg, dtype
        self.model_path, self.max_model_len, self.seed, self.name = model_path, max_model_len, seed, name
        self.placement_timeout_s = placement_timeout_s
        self._groups: list[WorkerGroup] = []
        self._next_id = 0
        self.version = 0
        self.generated = Counter()  # prompt key -> times its samples were delivered (an invariant, checked in tests)
        self.requeued_chunks = 0
        for _ in range(rollout_cfg.num_engines):
            self.add_engine()
        import ray

        ray.get([e.policy_version.remote() for e in self.engines])  # engines are up before the first call

    @property
    def engines(self) -> list:
        return [g.actors[0] for g in self._groups]

    def bundles(self) -> list[dict]:
        """One engine's bundles (what the autoscaler asks Ray for, per engine)."""
        return engine_placement(self.cfg).bundles

    def add_engine(self, timeout_s: float | None = None):
        """Start one more engine (it holds version 0 until synced; `generate` refuses it until then)."""
        i = self._next_id
        self._next_id += 1
        plan = engine_placement(self.cfg)
        group = WorkerGroup(RolloutWorker, 1, f"{self.name}-{i}", plan.actor_cpus, plan.actor_gpus,
                            placement=plan, on_gpu=self.cfg.gpus_per_engine > 0,
                            placement_timeout_s=timeout_s or self.placement_timeout_s,
                            actor_kwargs=[dict(model_path=self.model_path, rollout_cfg=self.cfg,
                                               max_model_len=self.max_model_len, seed=self.seed + i,
                                               dtype=self.dtype)], rank_suffix=False)
        self._groups.append(group)
        return group.actors[0]

    def remove_engine(self) -> None:
        """Stop the newest engine and free its placement group."""
        self._groups.pop().shutdown()

    def drop_dead(self, actors) -> None:
        """Forget engines found dead (mid-batch, or during a weight sync) and free their placement groups."""
        for g in [g for g in self._groups if g.actors and g.actors[0] in actors]:
            self._groups.remove(g)
            with contextlib.suppress(Exception):  # the actor is already gone; its placement group still goes
                g.shutdown()

    def replenish(self) -> int:
        """Start engines until `num_engines` serve again (after deaths); returns how many were started.

        New engines hold version 0 and are refused until the weight sync gives them the current policy.
        """
        missing = max(0, self.cfg.num_engines - len(self._groups))
        for _ in range(missing):
            self.add_engine()
        return missing

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seeds: list[int]) -> list[Sample]:
        """n samples per prompt, flattened prompt-major: result[i * n + j] is sample j of prompt i."""
        import ray
        from ray.exceptions import RayActorError

        queue = deque(c for c in cut(list(range(len(prompt_ids))), max(1, len(self.engines))) if c)
        idle = list(self.engines)
        in_flight: dict = {}
        results: dict[int, list[Sample]] = {}
        while queue or in_flight:
            while queue and idle:
                engine, idx = idle.pop(), queue.popleft()
                ref = engine.generate.remote([prompt_ids[i] for i in idx], sampling, self.version,
                                             [seeds[i] for i in idx])
                in_flight[ref] = (engine, idx)
            if not in_flight:
                raise NoEnginesError("every rollout engine died; no engine left to generate")
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            engine, idx = in_flight.pop(ref)
            try:
                out = ray.get(ref)
            except RayActorError:
                self.drop_dead([engine])  # the engine died mid-batch: its prompts go back in the queue
                queue.append(idx)
                self.requeued_chunks += 1
                continue
            for k, i in enumerate(idx):
                results[i] = out[k * sampling.n:(k + 1) * sampling.n]
                self.generated[(self.version, seeds[i])] += 1
            idle.append(engine)
        return [r for i in range(len(prompt_ids)) for r in results[i]]

    def peak_memory_mb(self) -> dict[str, float]:
        import ray

        return largest_peaks(ray.get([e.peak_memory_mb.remote() for e in self.engines]))

    def shutdown(self) -> None:
        while self._groups:
            self.remove_engine()
