"""The preference-model scorer: one normalized score per (prompt, response) text.

The PM may use another tokenizer than the policy (an encoder such as MiniLM), so it takes text. Scores are
normalized with the mean/std the PM measured on its own eval set (`pm_stats.json`).

`substring:<text>` names a simple known scorer instead: the share of response tokens whose text contains
`<text>` (in the policy's tokenizer). Tests use it to check that PPO raises a reward it can verify.
"""

from __future__ import annotations

from hh_ray.algo.batch import ScoreBatch
from hh_ray.data.hh import HUMAN
from hh_ray.data.tokenize import load_tokenizer
from hh_ray.models.forward import load_model, read_pm_stats, resolve_dtype, score_texts
from hh_ray.workers.device import gpu_worker_device
from hh_ray.workers.group import STATELESS_RESTARTS, GroupOwner, Worker, WorkerGroup


class ScorerWorker(Worker):
    def __init__(self, scorer: str, pm_path: str, policy_tokenizer: str, max_tokens: int, gpus: float = 0.0,
                 dtype: str = "auto", fmt: str = "auto"):
        self.kind = "substring" if scorer.startswith("substring:") else "pm"
        self.max_tokens = max_tokens
        if self.kind == "substring":
            tok = load_tokenizer(policy_tokenizer)
            text = scorer.removeprefix("substring:")
            self.targets = {i for i in range(len(tok)) if text in tok.decode([i])}
            if not text or not self.targets:
                raise ValueError(f"scorer '{scorer}': no token of {policy_tokenizer} contains {text!r}")
            return
        self.device = gpu_worker_device(gpus, "pm-scorer")
        self.model = load_model(pm_path, "pm", resolve_dtype(dtype, self.device != "cpu"))
        self.model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = load_tokenizer(pm_path, fmt)
        stats = read_pm_stats(pm_path)
        self.mean, self.std = stats["mean"], stats["std"]
        self.max_tokens = min(max_tokens, getattr(self.model.config, "max_position_embeddings", max_tokens))

    def score(self, batch: ScoreBatch) -> list[float]:
        if self.kind == "substring":
            return [sum(t in self.targets for t in ids) / max(len(ids), 1) for ids in batch.response]
        # the engine keeps the "\n\nHuman:" that ended the turn; the PM sees the turn alone
        responses = [r.removesuffix(HUMAN) for r in batch.response_text]
        raw = score_texts(self.model, self.tokenizer, batch.prompt_text, responses, self.max_tokens)
        return ((raw - self.mean) / self.std).tolist()


class ScorerGroup(GroupOwner):
    def __init__(self, scorer: str, pm_path: str, policy_tokenizer: str, max_tokens: int, num_workers: int = 1,
                 cpus: float = 0.25, gpus: float = 0.0, dtype: str = "auto", name: str = "pm-scorer",
                 node_resource: str = "", fmt: str = "auto"):
        kw = dict(scorer=scorer, pm_path=pm_path, policy_tokenizer=policy_tokenizer, max_tokens=max_tokens,
                  gpus=gpus, dtype=dtype, fmt=fmt)
        self.group = WorkerGroup(ScorerWorker, num_workers, name, cpus, gpus, actor_kwargs=[kw] * num_workers,
                                 node_resource=node_resource, restarts=STATELESS_RESTARTS)

    def score_async(self, prompts: list[str], responses: list[str], response_ids: list[list[int]]):
        """Start scoring on every worker's shard; returns a callable that waits and concatenates in order."""
        return self.group.fan_out("score", ScoreBatch(prompts, responses, response_ids), skip_empty=True)
