"""Weight sync from policy-trainer rank 0 to every rollout-engine worker, outside the trainers' own world.

A private process group (its own TCPStore, gloo on CPU, NCCL on GPU) joins trainer rank 0 (rank 0 here) and
each engine worker. Parameters travel in flat buckets of one dtype; receivers unflatten each bucket into
views and stream them straight into vLLM's `reload_weights`, so no second full copy is held.
"""

from __future__ import annotations

import datetime
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


def _broadcast(group, tensor: torch.Tensor) -> None:
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([tensor], opts).wait()


def send_bucket(group, tensors: list[torch.Tensor]) -> int:
    """Rank 0: flatten and broadcast one bucket; returns bytes sent."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).contiguous()
    _broadcast(group, flat)
    return flat.numel() * flat.element_size()


def receive_buckets(group, metas: list[ParamMeta], bucket_bytes: int, device: str = "cpu"):
    """Receivers: yield (name, tensor) as each bucket arrives (for `reload_weights(weights_iterator=...)`)."""
    for bucket in buckets(metas, bucket_bytes):
        numel = sum(_numel(m.shape) for m in bucket)
        flat = torch.empty(numel, dtype=getattr(torch, bucket[0].dtype), device=device)
        _broadcast(group, flat)
        offset = 0
        for m in bucket:
            n = _numel(m.shape)
            yield m.name, flat[offset:offset + n].view(m.shape)
            offset += n
