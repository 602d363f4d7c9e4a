"""Worker output into the run folder: every Ray worker process of a local cluster writes its stdout and stderr
(vLLM, transformers, DeepSpeed, Ray's own lines) to `<run_dir>/logs/worker-<pid>.log` instead of the console.

`redirect_output` is the cluster's `worker_process_setup_hook`: it runs in each worker process before its first
task, and its redirect is inherited by the processes the worker starts (a vLLM engine core, a compiler).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOG_DIR_ENV = "HH_RAY_WORKER_LOG_DIR"
SETUP_HOOK = "hh_ray.workers.logs.redirect_output"


def redirect_output() -> None:
    """Point this process's file descriptors 1 and 2 at its log file (nothing to do where the env var is unset)."""
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(folder) / f"worker-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
