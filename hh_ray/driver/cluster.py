"""Connecting the driver to Ray: an in-process local cluster by default, else the given address.

A local cluster lives as long as its driver. A driver killed with SIGKILL cannot stop it, so the driver
records the cluster's session in the run folder, and the next driver on that folder first ends every process
of a recorded session whose driver is gone (Ray's dashboard and agents would otherwise linger for minutes).

The workers of a local cluster write their output to `<run_dir>/logs/` (hh_ray.workers.logs), not the console:
their INFO and WARNING lines would bury the progress display. Errors still reach the console: an actor's
exception or death is raised in the driver, and Ray prints its own error reports there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from hh_ray.driver import stop
from hh_ray.workers.cluster import init_ray, ray_address
from hh_ray.workers.group import actor_env
from hh_ray.workers.logs import LOG_DIR_ENV, SETUP_HOOK

if TYPE_CHECKING:
    from hh_ray.config import RayConfig

SESSION_FILE = ".ray-local-session.json"
WORKER_LOGS = "logs"


def session_processes(session_name: str) -> list:
    """Processes of the local Ray session `session_name` (its name appears in their command lines)."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(session_name in part for part in proc.info["cmdline"] or []):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def end_stale_session(run_dir: Path) -> int:
    """Kill the processes of a local cluster whose driver died; returns how many were killed."""
    import psutil

    f = run_dir / SESSION_FILE
    if not f.is_file():
        return 0
    rec = json.loads(f.read_text())
    if psutil.pid_exists(rec["driver_pid"]) and rec["driver_pid"] != os.getpid():
        return 0  # its driver still runs (e.g. another command on the same folder)
    procs = session_processes(rec["session"])
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    f.unlink()
    return len(procs)


def connect(ray_cfg: RayConfig, run_dir: str | os.PathLike | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = ray_address(ray_cfg.address)
    if address == "local":
        run = Path(run_dir) if run_dir else None
        env = {"env_vars": actor_env()}
        if run is not None:
            killed = end_stale_session(run)
            if killed:
                print(f"[ray] ended {killed} processes of a local cluster whose driver died")
            env["env_vars"][LOG_DIR_ENV] = str((run / WORKER_LOGS).resolve())
            env["worker_process_setup_hook"] = SETUP_HOOK
        init_ray("local", ray_cfg.num_cpus, env, log_to_driver=run is None, logging_level=logging.WARNING,
                 _node_ip_address="127.0.0.1")
        if run is not None:
            run.mkdir(parents=True, exist_ok=True)
            session = ray._private.worker._global_node.session_name  # names every process of this cluster
            (run / SESSION_FILE).write_text(json.dumps({"session": session, "driver_pid": os.getpid()}))
            print(f"[ray] local cluster up; worker logs in {run / WORKER_LOGS}/", flush=True)
    else:
        init_ray(address)
    stop.rearm()  # ray.init replaced the command's SIGTERM handler with its own `sys.exit`
