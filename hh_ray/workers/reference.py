"""The frozen reference model: per-token logprobs of given responses under the initial policy."""

from __future__ import annotations

import numpy as np
import torch

from hh_ray.algo.batch import SequenceBatch, split
from hh_ray.data.tokenize import load_tokenizer
from hh_ray.models.forward import load_model, resolve_dtype
from hh_ray.models.objectives import TokenLogprobs
from hh_ray.workers.device import gpu_worker_device
from hh_ray.workers.group import STATELESS_RESTARTS, GroupOwner, Worker, WorkerGroup

MICRO_BATCH_ROWS = 16  # samples per forward pass (the capacity plan sizes activations by it)


class ReferenceWorker(Worker):
    """A frozen HF causal LM in inference mode (no optimizer, no DeepSpeed)."""

    def __init__(self, model_path: str, gpus: float = 0.0, dtype: str = "auto",
                 micro_batch_size: int = MICRO_BATCH_ROWS):
        self.device = gpu_worker_device(gpus, "reference")
        dtype = resolve_dtype(dtype, self.device != "cpu")
        self.model = load_model(model_path, "causal_lm", dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.micro = micro_batch_size

    def logprobs(self, batch: SequenceBatch, temperature: float, pack_to: int = 0) -> list[np.ndarray]:
        probe = TokenLogprobs(temperature, pack_to)
        with torch.no_grad():
            return [row for mb in split(batch, max(1, -(-len(batch.prompt) // self.micro)))
                    for row in probe(self.model, mb, self.pad_id)]


class ReferenceGroup(GroupOwner):
    def __init__(self, model_path: str, num_workers: int = 1, cpus: float = 0.25, gpus: float = 0.0,
                 dtype: str = "auto", node_resource: str = ""):
        kw = {"model_path": model_path, "gpus": gpus, "dtype": dtype}
        self.group = WorkerGroup(ReferenceWorker, num_workers, "reference", cpus, gpus, actor_kwargs=[kw] * num_workers,
                                 node_resource=node_resource, restarts=STATELESS_RESTARTS)

    def logprobs_async(self, batch: SequenceBatch, temperature: float, pack_to: int = 0):
        """Start the pass on every worker's shard; returns a callable that waits and concatenates in order."""
        return self.group.fan_out("logprobs", batch, temperature, pack_to, skip_empty=True)
