"""Connecting the driver to Ray: an in-process local cluster by default, else the given address."""

from __future__ import annotations

import os

from hh_ray.workers.group import actor_env


def connect(ray_cfg) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or ray_cfg.address
    env = {"env_vars": actor_env()}
    if address == "local":
        kwargs = {"num_cpus": ray_cfg.num_cpus} if ray_cfg.num_cpus else {}
        # A small machine still hosts every group: fractional CPUs per bundle, a floor of 4 logical CPUs.
        kwargs.setdefault("num_cpus", max(4, os.cpu_count() or 1))
        ray.init(address="local", include_dashboard=False, runtime_env=env, log_to_driver=True, **kwargs)
    else:
        ray.init(address=address)  # a submitted job keeps its own runtime env; groups set their env vars
