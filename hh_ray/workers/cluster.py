"""Reaching Ray: one `ray.init` for every command that needs a cluster (the driver's stages, the label service).

`local` starts an in-process cluster sized for a small machine (no dashboard); anything else is an address to
join. RAY_ADDRESS, as a submitted Ray job sets it, wins over the configured address.
"""

from __future__ import annotations

import os
from typing import Any

from hh_ray.workers.group import actor_env


def ray_address(configured: str) -> str:
    """Where to connect: RAY_ADDRESS when set (a submitted job), else the configured address ("local" or one)."""
    return os.environ.get("RAY_ADDRESS") or configured


def init_ray(address: str, num_cpus: int = 0, runtime_env: dict[str, Any] | None = None, **local_kwargs: Any) -> None:
    """`ray.init` for `address`. "local": an in-process cluster with `num_cpus` logical CPUs (0 = the machine's,
    at least 4, so a small machine still hosts every group with fractional CPUs per bundle), no dashboard, and
    `runtime_env` (default: the workers' environment, hh_ray.workers.group.actor_env); `local_kwargs` go to
    `ray.init` as well. Else join the cluster at `address`: a submitted job keeps its own runtime env (groups set
    their env vars)."""
    import ray

    if address == "local":
        ray.init(address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1), include_dashboard=False,
                 runtime_env=runtime_env if runtime_env is not None else {"env_vars": actor_env()}, **local_kwargs)
    else:
        ray.init(address=address)
