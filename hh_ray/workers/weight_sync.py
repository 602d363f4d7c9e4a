"""Weight sync from policy-trainer rank 0 to every rollout-engine worker, outside the trainers' own world.

A private process group (its own TCPStore, gloo on CPU, NCCL on GPU) joins trainer rank 0 (rank 0 here) and
each engine worker. Parameters travel in flat buckets of one dtype, two in flight at a time; receivers
unflatten each bucket into views and stream them straight into vLLM's `reload_weights`, so no second full
copy is held.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ParamMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str  # e.g. "float32"


def make_group(master: tuple[str, int], rank: int, world: int, backend: str, timeout_s: float):
    """A process group of `world` members that does not touch the default (trainer) group.

    Both backends get the timeout: a peer that died makes the next broadcast fail after `timeout_s` instead of
    hanging until NCCL's watchdog kills the trainer.
    """
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(master[0], master[1], world, is_master=rank == 0, timeout=timeout)
    prefixed = dist.PrefixStore("hh-ray-weight-sync", store)
    if backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, rank, world, opts)
    return dist.ProcessGroupGloo(prefixed, rank, world, timeout)


def buckets(metas: list[ParamMeta], bucket_bytes: int) -> list[list[ParamMeta]]:
    """Consecutive params of one dtype, each bucket at most `bucket_bytes` (or one param if larger)."""
    out: list[list[ParamMeta]] = []
    size = 0
    for m in metas:
        nbytes = math.prod(m.shape) * torch.empty(0, dtype=getattr(torch, m.dtype)).element_size()
        if out and out[-1][0].dtype == m.dtype and size + nbytes <= bucket_bytes:
            out[-1].append(m)
            size += nbytes
        else:
            out.append([m])
            size = nbytes
    return out


def _broadcast(group, tensor: torch.Tensor):
    """Start a broadcast from rank 0; returns the work handle (the caller waits)."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)


class BucketSender:
    """Rank 0: flattens bucket k+1 while bucket k is still on the wire (at most two buckets in memory)."""

    def __init__(self, group):
        self.group, self.pending, self.sent = group, None, 0

    def send(self, tensors: list[torch.Tensor]) -> None:
        flat = torch.cat([t.detach().reshape(-1) for t in tensors]).contiguous()
        self.flush()
        self.pending = _broadcast(self.group, flat)
        self.sent += flat.numel() * flat.element_size()

    def flush(self) -> None:
        if self.pending is not None:
            self.pending.wait()
            self.pending = None


def receive_buckets(group, metas: list[ParamMeta], bucket_bytes: int, device: str = "cpu", stats: dict | None = None):
    """Receivers: yield (name, tensor) for `reload_weights(weights_iterator=...)`.

    Bucket k+1 is already being received while the engine loads bucket k, so transport and loading overlap;
    `stats["wait_seconds"]` is the time spent waiting on the wire that loading did not hide.
    """
    plan = buckets(metas, bucket_bytes)

    def post(bucket):
        flat = torch.empty(sum(math.prod(m.shape) for m in bucket), dtype=getattr(torch, bucket[0].dtype),
                           device=device)
        return flat, _broadcast(group, flat)

    waited = 0.0
    nxt = post(plan[0]) if plan else None
    for i, bucket in enumerate(plan):
        flat, work = nxt
        t0 = time.perf_counter()
        work.wait()
        waited += time.perf_counter() - t0
        nxt = post(plan[i + 1]) if i + 1 < len(plan) else None
        offset = 0
        for m in bucket:
            n = math.prod(m.shape)
            yield m.name, flat[offset:offset + n].view(m.shape)
            offset += n
    if stats is not None:
        stats["wait_seconds"] = waited


@dataclass
class SyncStats:
    seconds: float  # the whole sync as the driver waited for it
    bytes: int  # what trainer rank 0 broadcast
    load_seconds: float  # the slowest engine's time inside vLLM's loader (not waiting on the wire)


class WeightSync:
    """The transport that moves the policy into the engines: trainer rank 0, the engines, the layout.

    Only the rollout pool calls it (`RolloutGroup.ensure`, which decides whether a push is needed and records the
    version). It rebuilds the private group whenever the engine set changed (an engine added, removed or dead), so
    a broadcast never waits on a peer that is gone. Engines report the version they hold; `push` checks them.
    """

    def __init__(self, policy, rollout, bucket_bytes: int, timeout_s: float):
        self.policy, self.rollout = policy, rollout
        self.bucket_bytes, self.timeout_s = bucket_bytes, timeout_s
        self.metas: list[ParamMeta] = []
        self._members: tuple = ()

    def connect(self) -> None:
        """(Re)build the group joining trainer rank 0 and every engine worker."""
        import ray

        engines = self.rollout.engines
        tp = self.rollout.cfg.tensor_parallel_size
        world = 1 + len(engines) * tp
        master = ray.get(self.policy.group.actors[0].address.remote())
        refs = self.policy.group.call_async("init_weight_sync", master, world, self.timeout_s)
        refs += [e.init_weight_sync.remote(master, 1 + i * tp, world, self.timeout_s) for i, e in enumerate(engines)]
        self.metas = ray.get(refs[0])
        ray.get(refs)
        self._members = tuple(engines)

    def push(self, version: int, attempts: int = 3) -> SyncStats:
        """Broadcast the trainer's weights into every engine and mark them with `version`.

        An engine that dies during the broadcast is dropped, the group rebuilt without it, and the push repeated.
        A trainer rank 0 that dies during it raises RayActorError (the driver rebuilds the trainer groups and pushes
        again, overwriting what the engines half-received).
        """
        import ray
        from ray.exceptions import RayActorError

        for attempt in range(attempts):
            if tuple(self.rollout.engines) != self._members:
                self.connect()
            t0 = time.perf_counter()
            send = self.policy.group.call_async("broadcast_weights", self.bucket_bytes)
            engines = list(self.rollout.engines)
            recv = [e.receive_weights.remote(self.metas, self.bucket_bytes, version) for e in engines]
            dead = []
            for e, ref in zip(engines, recv):
                try:
                    ray.get(ref)
                except RayActorError:
                    dead.append(e)
                except ray.exceptions.RayTaskError:
                    # the engine's receive broke off ("connection reset"): when trainer rank 0 died mid-broadcast,
                    # its RayActorError rises here for the driver to rebuild the trainers; otherwise the error
                    # the broadcast itself met, or the engine's
                    ray.get(send)
                    raise
            if not dead:
                break
            self.rollout.drop_dead(dead)
            with contextlib.suppress(ray.exceptions.RayTaskError):
                ray.get(send)  # rank 0's broadcast failed with the peer gone (gloo) or timed out
            if attempt == attempts - 1:
                raise RuntimeError(f"weight sync to version {version}: engines kept dying ({attempts} attempts)")
            if not self.rollout.engines:
                self.rollout.replenish()
        sent = ray.get(send)[0]
        loads = ray.get(recv)
        held = [x["version"] for x in loads]  # reported by each receive: no second call an engine could die in
        if any(v != version for v in held):
            raise RuntimeError(f"weight sync to version {version} left engines at versions {held}")
        return SyncStats(time.perf_counter() - t0, sent["bytes"],
                         max((x["seconds"] - x["wait_seconds"] for x in loads), default=0.0))
