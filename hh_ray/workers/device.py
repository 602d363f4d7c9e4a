"""Which device a worker uses, and the environment and clocks that follow from it: small pure functions.

A group runs on GPU when its config gives it GPUs. What the process happens to see is only checked against
that: an engine actor at tensor-parallel > 1 holds no GPU itself, and a silent fall-back to the CPU path
(fp32, gloo) would be far worse than a clear error.
"""

from __future__ import annotations

import time
from typing import Sequence


class DeviceError(RuntimeError):
    """A group configured for GPUs runs in a process that sees none (or the reverse)."""


def device_from_config(gpus: float) -> str:
    """"cuda" when the group's config gives each actor GPUs, else "cpu"."""
    return "cuda" if gpus > 0 else "cpu"


def local_rank(gpu_ids: Sequence[str | int], cuda_visible_devices: str | None) -> int:
    """Index of this actor's GPU among the devices torch sees (what LOCAL_RANK and `cuda:N` must name).

    Ray normally sets CUDA_VISIBLE_DEVICES to the actor's own GPUs, so the index is 0. Clusters that set
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES leave every GPU visible: then the actor's Ray GPU id is looked up
    in CUDA_VISIBLE_DEVICES (or, when unset, is the device index itself).
    """
    if not gpu_ids:
        return 0
    mine = str(gpu_ids[0])
    if cuda_visible_devices is None or cuda_visible_devices.strip() == "":
        return int(mine)
    visible = [d.strip() for d in cuda_visible_devices.split(",") if d.strip()]
    if mine not in visible:
        raise DeviceError(f"Ray assigned GPU {mine} but CUDA_VISIBLE_DEVICES={cuda_visible_devices} does not list it")
    return visible.index(mine)


def torch_device(gpus: float, gpu_ids: Sequence[str | int] = (), cuda_visible_devices: str | None = None) -> str:
    """"cpu", or "cuda:<local rank>" for a GPU group."""
    if device_from_config(gpus) == "cpu":
        return "cpu"
    return f"cuda:{local_rank(gpu_ids, cuda_visible_devices)}"


def check_device(on_gpu: bool, cuda_available: bool, group: str) -> None:
    """A GPU group must see CUDA; otherwise it would silently train in fp32 over gloo."""
    if on_gpu and not cuda_available:
        raise DeviceError(f"group '{group}' is configured with GPUs but this process sees no CUDA device")


def process_env(on_gpu: bool, environ: dict[str, str]) -> dict[str, str]:
    """Per-device settings of a worker process: TorchDynamo off on CPU (compiling costs minutes on small
    machines), on for GPU groups (vLLM's CUDA-graph path compiles with it)."""
    if on_gpu:
        return {"TORCHDYNAMO_DISABLE": "0"}
    return {"TORCHDYNAMO_DISABLE": environ.get("TORCHDYNAMO_DISABLE", "1")}


def gpu_worker_device(gpus: float, group: str) -> str:
    """The torch device of an actor of a group given `gpus` each (checked against what the process sees)."""
    import os

    import torch

    check_device(gpus > 0, torch.cuda.is_available(), group)
    return torch_device(gpus, ray_gpu_ids() if gpus > 0 else (), os.environ.get("CUDA_VISIBLE_DEVICES"))


def ray_gpu_ids() -> list[str]:
    """This actor's GPU ids as Ray assigned them (physical ids on the node); none outside Ray."""
    import ray

    if not ray.is_initialized():
        return []
    return [str(i) for i in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]


def synchronized_clock(on_gpu: bool) -> float:
    """`perf_counter` after the GPU finished its queued work: NCCL calls return before the bytes moved, so
    a clock read without this measures queueing, not transfer."""
    if on_gpu:
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()
