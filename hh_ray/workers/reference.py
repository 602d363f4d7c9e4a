"""The frozen reference model: per-token logprobs of given responses under the initial policy."""

from __future__ import annotations

from hh_ray.workers.group import Worker, WorkerGroup, shard


class ReferenceWorker(Worker):
    """A frozen HF causal LM in inference mode (no optimizer, no DeepSpeed)."""

    def __init__(self, model_path: str, micro_batch_size: int = 16, gpus: float = 0.0):
        import torch

        from hh_ray.data.tokenize import load_tokenizer
        from hh_ray.models.forward import load_model
        from hh_ray.workers.device import gpu_worker_device

        self.device = gpu_worker_device(gpus, "reference")
        dtype = torch.bfloat16 if self.device != "cpu" else torch.float32
        self.model = load_model(model_path, "causal_lm", dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.micro = micro_batch_size

    def logprobs(self, prompts: list[list[int]], responses: list[list[int]], temperature: float = 1.0):
        import torch

        from hh_ray.models.forward import response_logprobs

        out: list[list[float]] = []
        with torch.no_grad():
            for i in range(0, len(prompts), self.micro):
                lp, _, _ = response_logprobs(self.model, prompts[i:i + self.micro], responses[i:i + self.micro],
                                             self.pad_id, temperature)
                out += [row[: len(r)].tolist() for row, r in zip(lp.cpu(), responses[i:i + self.micro])]
        return out


class ReferenceGroup:
    def __init__(self, model_path: str, num_workers: int = 1, cpus: float = 0.25, gpus: float = 0.0,
                 node_resource: str = ""):
        self.group = WorkerGroup(ReferenceWorker, num_workers, "reference", cpus, gpus, node_resource=node_resource,
                                 actor_kwargs=[{"model_path": model_path, "gpus": gpus}] * num_workers)

    def logprobs_async(self, prompts, responses, temperature: float = 1.0) -> list:
        n = len(self.group)
        return [a.logprobs.remote(p, r, temperature)
                for a, p, r in zip(self.group.actors, shard(prompts, n), shard(responses, n)) if p]

    def peak_memory_mb(self) -> dict[str, float]:
        return self.group.peak_memory_mb()

    def shutdown(self) -> None:
        self.group.shutdown()
