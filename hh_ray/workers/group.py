"""Worker groups: N Ray actors of one role in one placement group, with fan-out and gather (`fan_out`: the one way
a batch is sharded over a group's actors and the results come back in batch order).

Every role (trainer, rollout, reference, scorer) is a `WorkerGroup`; the driver only ever talks to groups,
never to models, which is what keeps the driver a plain PPO loop (veRL's single-controller split).
Ray is imported where a group needs it, so a worker class also runs in-process where Ray is absent
(the one-GPU device benchmark builds a `TrainerWorker` directly).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from hh_ray.algo.batch import batch_size, split

if TYPE_CHECKING:
    import ray


STATELESS_RESTARTS = 3  # how often Ray restarts a dead reference or scorer actor in place


class PlacementError(RuntimeError):
    """A group's resources cannot be had from the cluster; the message says what was asked and what exists."""


def actor_env(cpus: float = 1.0, on_gpu: bool = False) -> dict[str, str]:
    """Environment for a worker process: BLAS threads = its whole CPUs (at least 1), cached JIT ops."""
    from hh_ray.workers.device import process_env

    env = {
        "OMP_NUM_THREADS": os.environ.get("HH_RAY_ACTOR_THREADS", str(max(1, int(cpus)))),
        "TORCH_EXTENSIONS_DIR": str(extensions_dir()),
        "TOKENIZERS_PARALLELISM": "false",
        **process_env(on_gpu, dict(os.environ)),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0"),
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("HH_RLHF_DIR", "HH_RAY_MODEL_CACHE", "RAY_AUTH_MODE", "HF_HOME", "DS_ACCELERATOR"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def extensions_dir() -> Path:
    """Where torch JIT-builds DeepSpeed's ops: TORCH_EXTENSIONS_DIR, else one folder per Python environment (a
    build's flags name the environment's include paths, so two checkouts sharing a folder rebuild it in turn)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    env_tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "hh-ray" / "torch_extensions" / env_tag


@contextlib.contextmanager
def exclusive_build(root: Path):
    """Hold the build folder's flock (the kernel drops it when its holder dies, however it dies) and remove the
    `lock` files torch's builder left: torch waits forever on one, and a builder killed mid-build leaves it
    behind. Every hh-ray build runs under this flock, so no live builder owns a `lock` found here."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "hh-ray-build.flock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        for stale in root.glob("*/lock"):
            stale.unlink(missing_ok=True)
        yield


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

    def pid(self) -> int:
        """This actor's process id (fault-injection tests kill it)."""
        return os.getpid()


class WorkerGroup:
    """`size` actors of `actor_cls`, one placement-group bundle each, named `<name>-<rank>` in the dashboard
    (or `<name>` alone when `rank_suffix` is off: an elastic pool's one-actor groups are already numbered).

    `restarts` > 0 is for stateless roles (reference, scorer): Ray restarts a dead actor in its bundle with the
    same arguments and retries the calls it was running, so a step goes on as if nothing had happened.
    """

    def __init__(self, actor_cls: type, size: int, name: str, cpus: float, gpus: float = 0.0,
                 placement_timeout_s: float = 120.0, actor_kwargs: Sequence[dict] | None = None,
                 rank_suffix: bool = True, restarts: int = 0, node_resource: str = "", placement=None,
                 on_gpu: bool | None = None):
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
                name=f"{name}-{rank}" if rank_suffix else name, num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=plan.actor_bundles[rank],
                    placement_group_capture_child_tasks=plan.capture_child_tasks),
                runtime_env={"env_vars": actor_env(plan.actor_cpus, on_gpu)}, max_restarts=restarts,
                max_task_retries=restarts,
            ).remote(**kwargs[rank])
            for rank in range(size)
        ]

    def __len__(self) -> int:
        return len(self.actors)

    def call_async(self, method: str, *args, **kwargs) -> list[ray.ObjectRef]:
        """The same call on every actor; returns the refs."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def call(self, method: str, *args, **kwargs) -> list[Any]:
        return get_all(self.call_async(method, *args, **kwargs))

    def fan_out(self, method: str, batch, *args, skip_empty: bool = False,
                join: Callable[[list], Any] | None = None) -> Callable[[], Any]:
        """`fan_out` over this group's actors (shard k to rank k)."""
        return fan_out(self.actors, method, batch, *args, skip_empty=skip_empty, join=join)

    def peak_memory_mb(self) -> dict[str, float]:
        return largest_peaks(self.call("peak_memory_mb"))

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(a)
        for a in self.actors:  # dead for sure, so a replacement group can take the same names at once
            with contextlib.suppress(Exception):  # the expected outcome: the actor is gone
                ray.get(a.pid.options(max_task_retries=0).remote(), timeout=30)
        remove_placement_group(self.pg)
        self.actors = []


class GroupOwner:
    """Base of a role's group wrapper (trainer, reference, scorer): memory and shutdown go to its `WorkerGroup`."""

    group: WorkerGroup

    def peak_memory_mb(self) -> dict[str, float]:
        return self.group.peak_memory_mb()

    def shutdown(self) -> None:
        self.group.shutdown()


class NoActorsError(RuntimeError):
    """Every actor of an elastic fan-out died before the batch was done."""


def fan_out(actors: Sequence, method: str, batch, *args, skip_empty: bool = False,
            join: Callable[[list], Any] | None = None, on_dead: Callable[[Any], None] | None = None
            ) -> Callable[[], Any]:
    """The one driver-to-group fan-out: `batch` (a typed column batch, `hh_ray.algo.batch`) cut into one contiguous
    shard per actor, `method(shard, *args)` started on each (shard k on actor k); returns a callable that waits
    and joins the per-shard results in batch order (concatenated lists, or `join(results)`).

    Any failure rises as soon as it happens (when one rank of a collective dies the others block in it, and
    waiting for them in order would wait out its timeout). With `on_dead`, an elastic pool's: a shard whose actor
    died is told to `on_dead(actor)` and goes to the next idle survivor, so every shard's result comes back once;
    NoActorsError when none is left. `skip_empty` leaves out empty shards (a batch smaller than the group);
    trainer ranks all run, since a ZeRO-3 forward gathers parameters from every rank.
    """
    import ray
    from ray.exceptions import RayActorError

    shards = split(batch, max(1, len(actors)))
    todo = deque(k for k, s in enumerate(shards) if batch_size(s) or not skip_empty)
    idle, in_flight, results = list(actors), {}, {}

    def start() -> None:
        while todo and idle:
            actor, k = idle.pop(0), todo.popleft()
            in_flight[getattr(actor, method).remote(shards[k], *args)] = (actor, k)

    def wait():
        while todo or in_flight:
            start()
            if not in_flight:
                raise NoActorsError(f"every actor died; none left to run `{method}`")
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            actor, k = in_flight.pop(ref)
            try:
                results[k] = ray.get(ref)
            except RayActorError:
                if on_dead is None:
                    raise
                on_dead(actor)
                todo.append(k)
                continue
            idle.append(actor)
        return (join or concat)([results[k] for k in sorted(results)])

    start()
    return wait


def get_all(refs: list) -> list:
    """`ray.get` that fails as soon as any call fails: when one rank of a collective dies, the others block in the
    collective, and waiting for them in order would wait out the collective's timeout."""
    import ray

    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)  # raises the first failure now
    return ray.get(list(refs))


def concat(parts: Sequence[list]) -> list:
    """Per-shard result lists joined into one, in shard order."""
    return [x for part in parts for x in part]


def largest_peaks(reports: Sequence[dict[str, float]]) -> dict[str, float]:
    """A group's memory figure: the largest per-actor peak of each kind (every actor is its own process)."""
    out: dict[str, float] = {}
    for report in reports:
        for k, v in report.items():
            out[k] = max(out.get(k, 0.0), v)
    return out
