"""The rollout generator: Ray actors each holding a real vLLM engine, and the weight-sync extension.

An engine reports the policy version it holds; `generate` refuses to run with a version the driver did not
ask for, so a stale policy never produces PPO samples silently.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hh_ray.algo.batch import PromptBatch
from hh_ray.data.hh import HUMAN
from hh_ray.workers.device import device_from_config
from hh_ray.workers.group import NoActorsError, Worker, WorkerGroup, fan_out, largest_peaks
from hh_ray.workers.placement import engine_env_to_clear, engine_placement, per_request_seeds, vllm_engine_kwargs
from hh_ray.workers.weight_sync import SyncStats, WeightSync

if TYPE_CHECKING:
    from hh_ray.config import RolloutConfig


class StaleWeightsError(RuntimeError):
    """An engine was asked to generate with a policy version it does not hold."""


class NoEnginesError(NoActorsError):
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
    logprobs: np.ndarray  # float32, one per response token
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

    def generate(self, batch: PromptBatch, sampling: Sampling, version: int) -> list[Sample]:
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
            for seed in batch.seed
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch.prompt], params, use_tqdm=False)
        results = []
        for out in outs:
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = np.array([lp[t].logprob for lp, t in zip(c.logprobs, ids)], dtype=np.float32)
                results.append(Sample(ids, lps, c.text, c.finish_reason))
        self.last_seconds = time.perf_counter() - t0
        return results

    def prompt_logprobs(self, sequences: list[list[int]], start: list[int]) -> list[np.ndarray]:
        """log p(token | prefix) of each token from index `start` on, by the engine's own forward (tests)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences], params, use_tqdm=False)
        return [np.array([o.prompt_logprobs[i][s[i]].logprob for i in range(st, len(s))], dtype=np.float32)
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

    `generate` hands the prompts out in chunks, one per engine (`group.fan_out`), and re-queues a chunk whose
    engine died, so every prompt's samples come back exactly once and in prompt order.

    It is the one owner of the engines' policy version: `ensure(version)` is the only way weights move into
    the engines (driver, autoscaler and fault recovery all call it), and it pushes only when an engine is behind.
    """

    def __init__(self, model_path: str, rollout_cfg: RolloutConfig, max_model_len: int, seed: int = 0,
                 name: str = "rollout", placement_timeout_s: float = 120.0, dtype: str = "auto"):
        self.cfg, self.dtype = rollout_cfg, dtype
        self.model_path, self.max_model_len, self.seed, self.name = model_path, max_model_len, seed, name
        self.placement_timeout_s = placement_timeout_s
        self._groups: list[WorkerGroup] = []
        self._held: dict[str, int | None] = {}  # engine name -> the version it holds (None: unknown, a push broke)
        self._next_id = 0
        self.version = 0  # the version the pool serves: what `generate` asks every engine for
        self.sync: WeightSync | None = None
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
        """Start one more engine (it holds version 0, the starting policy, until `ensure` brings it up to date;
        `generate` refuses it until then)."""
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
        self._held[group.name] = 0
        return group.actors[0]

    def remove_engine(self) -> None:
        """Stop the newest engine and free its placement group."""
        group = self._groups.pop()
        self._held.pop(group.name, None)
        group.shutdown()

    def drop_dead(self, actors) -> None:
        """Forget engines found dead (mid-batch, or during a weight sync) and free their placement groups."""
        for g in [g for g in self._groups if g.actors and g.actors[0] in actors]:
            self._groups.remove(g)
            self._held.pop(g.name, None)
            with contextlib.suppress(Exception):  # the actor is already gone; its placement group still goes
                g.shutdown()

    def replenish(self) -> int:
        """Start engines until `num_engines` serve again (after deaths); returns how many were started.

        New engines hold version 0 and are refused until `ensure` gives them the current policy.
        """
        missing = max(0, self.cfg.num_engines - len(self._groups))
        for _ in range(missing):
            self.add_engine()
        return missing

    def connect(self, policy, bucket_bytes: int = 0, timeout_s: float = 0.0) -> None:
        """Join trainer group `policy`'s rank 0 to the engines, the source `ensure` pushes from; called again with
        the new group after the trainers were rebuilt (the first call sets bucket size and timeout)."""
        if self.sync is None:
            if bucket_bytes <= 0 or timeout_s <= 0:
                raise ValueError(f"rollout pool: the first `connect` sets the weight sync's bucket size and timeout; "
                                 f"got bucket_bytes={bucket_bytes}, timeout_s={timeout_s} (both must be > 0)")
            self.sync = WeightSync(policy, self, bucket_bytes, timeout_s)
        self.sync.policy = policy
        self.sync.connect()

    def behind(self, version: int) -> list[str]:
        """The engines that do not (or may not) hold `version`."""
        return [g.name for g in self._groups if self._held.get(g.name) != version]

    def ensure(self, version: int | None = None) -> SyncStats | None:
        """Every engine holds policy `version` (default: the version the pool serves, e.g. for engines just
        added) once this returns: dead engines are replaced first, and the trainer's weights are pushed only when
        some engine is behind. Call it only while the trainers are idle and nothing generates. Returns the push's
        stats, or None when no push was needed."""
        version = self.version if version is None else version
        self.replenish()  # first, so that a push never goes to a pool whose engines all died
        if self._groups and not self.behind(version):
            return None
        if self.sync is None:
            raise RuntimeError("rollout pool: `connect` a policy trainer before `ensure` can push weights")
        self._held = dict.fromkeys(self._held)  # a push that breaks off leaves every engine's weights unknown
        stats = self.sync.push(version)
        self._held = {g.name: version for g in self._groups}
        self.version = version
        return stats

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seeds: list[int]) -> list[Sample]:
        """n samples per prompt, flattened prompt-major: result[i * n + j] is sample j of prompt i."""
        version = self.version
        try:
            samples = fan_out(self.engines, "generate", PromptBatch(prompt_ids, seeds), sampling, version,
                              skip_empty=True, on_dead=self._lost)()
        except NoActorsError as exc:
            raise NoEnginesError("every rollout engine died; no engine left to generate") from exc
        for seed in seeds:
            self.generated[(version, seed)] += 1
        return samples

    def _lost(self, engine) -> None:
        """An engine died mid-batch: it is dropped, and its prompts go to another engine."""
        self.drop_dead([engine])
        self.requeued_chunks += 1

    def peak_memory_mb(self) -> dict[str, float]:
        import ray

        return largest_peaks(ray.get([e.peak_memory_mb.remote() for e in self.engines]))

    def shutdown(self) -> None:
        while self._groups:
            self.remove_engine()
