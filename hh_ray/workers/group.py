"""Worker groups: N Ray actors of one role in one placement group, with fan-out and gather.

Every role (trainer, rollout, reference, scorer) is a `WorkerGroup`; the driver only ever talks to groups,
never to models, which is what keeps the driver a plain PPO loop (veRL's single-controller split).
Ray is imported where a group needs it, so a worker class also runs in-process where Ray is absent
(the one-GPU device benchmark builds a `TrainerWorker` directly).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Sequence


class PlacementError(RuntimeError):
    """A group's resources cannot be had from the cluster; the message says what was asked and what exists."""


def actor_env(cpus: float = 1.0, on_gpu: bool = False) -> dict[str, str]:
    """Environment for a worker process: BLAS threads = its whole CPUs (at least 1), cached JIT ops."""
    from hh_ray.workers.device import process_env

    cache = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.expanduser("~/.cache/hh-ray/torch_extensions")
    env = {
        "OMP_NUM_THREADS": os.environ.get("HH_RAY_ACTOR_THREADS", str(max(1, int(cpus)))),
        "TORCH_EXTENSIONS_DIR": cache,
        "TOKENIZERS_PARALLELISM": "false",
        **process_env(on_gpu, dict(os.environ)),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("HH_RLHF_DIR", "RAY_AUTH_MODE", "HF_HOME", "DS_ACCELERATOR"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


class Worker:
    """Base of every actor role: what any worker can report about itself."""

    def peak_memory_mb(self) -> dict[str, float]:
        """This process's peak resident memory (and peak GPU memory when it has a device), in MiB."""
        import resource

        import torch

        out = {"rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux reports KiB
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out


class WorkerGroup:
    """`size` actors of `actor_cls`, one placement-group bundle each, named `<name>-<rank>` in the dashboard."""

    def __init__(
        self,
        actor_cls: type,
        size: int,
        name: str,
        cpus: float,
        gpus: float = 0.0,
        placement_timeout_s: float = 120.0,
        actor_kwargs: Sequence[dict] | None = None,
        node_resource: str = "",
        placement=None,
        on_gpu: bool | None = None,
    ):
        """`placement` (a `placement.GroupPlacement`) overrides the plain one-bundle-per-actor layout;
        `on_gpu` (default: the group has GPUs) picks the per-device process environment."""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from hh_ray.workers.placement import worker_placement

        self.name = name
        plan = placement or worker_placement(size, cpus, gpus, node_resource)
        on_gpu = plan.gpus > 0 if on_gpu is None else on_gpu
        self.pg = placement_group(plan.bundles, strategy=plan.strategy, name=f"{name}-pg")
        ready, _ = ray.wait([self.pg.ready()], timeout=placement_timeout_s)
        if not ready:
            remove_placement_group(self.pg)
            have = ray.cluster_resources()
            kinds = ["CPU", "GPU"] + sorted({k for b in plan.bundles for k in b} - {"CPU", "GPU"})
            raise PlacementError(
                f"group '{name}' needs bundles {plan.bundles} ({plan.strategy}) but could not be placed within "
                f"{placement_timeout_s:.0f} s; cluster has {' '.join(f'{k}={have.get(k, 0):g}' for k in kinds)} "
                "(other groups may hold some; hh-ray plan shows where each group should land)"
            )
        remote_cls = ray.remote(actor_cls) if not hasattr(actor_cls, "remote") else actor_cls
        kwargs = list(actor_kwargs) if actor_kwargs is not None else [{} for _ in range(size)]
        self.actors = [
            remote_cls.options(
                name=f"{name}-{rank}",
                num_cpus=plan.actor_cpus,
                num_gpus=plan.actor_gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=plan.actor_bundles[rank],
                    placement_group_capture_child_tasks=plan.capture_child_tasks,
                ),
                runtime_env={"env_vars": actor_env(plan.actor_cpus, on_gpu)},
            ).remote(**kwargs[rank])
            for rank in range(size)
        ]

    def __len__(self) -> int:
        return len(self.actors)

    def call_async(self, method: str, *args, **kwargs) -> list[ray.ObjectRef]:
        """The same call on every actor; returns the refs."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def call(self, method: str, *args, **kwargs) -> list[Any]:
        import ray

        return ray.get(self.call_async(method, *args, **kwargs))

    def call_each_async(self, method: str, per_actor: Sequence[tuple[tuple, dict]]) -> list[ray.ObjectRef]:
        """One (args, kwargs) per actor, e.g. a shard of a batch each."""
        return [getattr(a, method).remote(*args, **kw) for a, (args, kw) in zip(self.actors, per_actor)]

    def peak_memory_mb(self) -> dict[str, float]:
        return largest_peaks(self.call("peak_memory_mb"))

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            ray.kill(a)
        remove_placement_group(self.pg)
        self.actors = []


def largest_peaks(reports: Sequence[dict[str, float]]) -> dict[str, float]:
    """A group's memory figure: the largest per-actor peak of each kind (every actor is its own process)."""
    out: dict[str, float] = {}
    for report in reports:
        for k, v in report.items():
            out[k] = max(out.get(k, 0.0), v)
    return out


def shard(items: Sequence, parts: int) -> list[list]:
    """Split into `parts` contiguous, nearly equal pieces (the first ones one longer when uneven)."""
    n = len(items)
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def shard_batch(batch: dict[str, Sequence], parts: int) -> list[dict[str, list]]:
    """Shard every column of a column-oriented batch the same way."""
    cols = {k: shard(v, parts) for k, v in batch.items()}
    return [{k: cols[k][i] for k in batch} for i in range(parts)]
