"""Weight sync from policy-trainer rank 0 to every rollout-engine worker, outside the trainers' own world.

A private process group (its own TCPStore, gloo on CPU, NCCL on GPU) joins trainer rank 0 (rank 0 here) and
each engine worker. Parameters travel in flat buckets of one dtype, two in flight at a time; receivers
unflatten each bucket into views and stream them straight into vLLM's `reload_weights`, so no second full
copy is held.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_BUCKET_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ParamMeta:
    name: str
    shape: tuple[int, ...]
    dtype: str  # e.g. "float32"


def make_group(master: tuple[str, int], rank: int, world: int, backend: str, timeout_s: float = 600.0):
    """A process group of `world` members that does not touch the default (trainer) group."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(master[0], master[1], world, is_master=rank == 0, timeout=timeout)
    prefixed = dist.PrefixStore("hh-ray-weight-sync", store)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(prefixed, rank, world)
    return dist.ProcessGroupGloo(prefixed, rank, world, timeout)


def buckets(metas: list[ParamMeta], bucket_bytes: int) -> list[list[ParamMeta]]:
    """Consecutive params of one dtype, each bucket at most `bucket_bytes` (or one param if larger)."""
    out: list[list[ParamMeta]] = []
    size = 0
    for m in metas:
        nbytes = _numel(m.shape) * torch.empty(0, dtype=getattr(torch, m.dtype)).element_size()
        if out and out[-1][0].dtype == m.dtype and size + nbytes <= bucket_bytes:
            out[-1].append(m)
            size += nbytes
        else:
            out.append([m])
            size = nbytes
    return out


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


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
        flat = torch.empty(sum(_numel(m.shape) for m in bucket), dtype=getattr(torch, bucket[0].dtype), device=device)
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
            n = _numel(m.shape)
            yield m.name, flat[offset:offset + n].view(m.shape)
            offset += n
    if stats is not None:
        stats["wait_seconds"] = waited
