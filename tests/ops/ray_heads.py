"""Starting a real Ray head for a test: `ray start --head` in a private temp dir and its own PID namespace.

Stopping it kills that namespace's init, which ends exactly that cluster's processes and no others.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hh_ray.workers.group import free_port


def start_head(extra_env: dict | None = None):
    """`ray start --head --block` in its own PID namespace, every port free and on 127.0.0.1; yields its info.

    Its files go to a short folder directly under /tmp, not pytest's tmp_path: Ray's socket paths must stay under
    108 bytes, and `/tmp/pytest-of-root/pytest-NNN/<name>0/` left too few for the dashboard's sockets once
    pytest's counter reached three digits (its MetricsHead module then failed to start)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare")
    tmp = Path(tempfile.mkdtemp(prefix="rayhead-", dir="/tmp"))
    # every port this head binds is a free one: the session's in-process Ray (other tests) holds the defaults,
    # e.g. the dashboard agent's 52365, and a clash leaves this head without a job agent
    ports = {k: free_port() for k in ("gcs", "dashboard", "metrics", "agent", "agent_grpc", "client", "runtime_env")}
    venv_bin = Path(sys.executable).parent
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PATH": f"{venv_bin}:{os.environ['PATH']}",
                        "PYTHONPATH": str(Path(__file__).resolve().parents[2])} | (extra_env or {})
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", str(venv_bin / "ray"), "start", "--head", "--block",
           "--node-ip-address=127.0.0.1", f"--port={ports['gcs']}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={ports['dashboard']}",
           f"--metrics-export-port={ports['metrics']}", f"--dashboard-agent-listen-port={ports['agent']}",
           f"--dashboard-agent-grpc-port={ports['agent_grpc']}", f"--ray-client-server-port={ports['client']}",
           f"--runtime-env-agent-port={ports['runtime_env']}", f"--temp-dir={tmp / 'ray'}", "--num-cpus=4",
           "--include-dashboard=true", "--disable-usage-stats"]
    log = open(tmp / "head.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard']}"
    deadline = time.time() + 300  # a loaded 2-core machine takes minutes to start a head
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # up, and asking for a token
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"ray head exited: {(tmp / 'head.log').read_text()[-2000:]}")
            time.sleep(1)
    else:
        pytest.fail("ray head dashboard did not come up")
    try:
        yield {"url": url, "metrics": f"http://127.0.0.1:{ports['metrics']}/metrics", "dir": tmp, "env": env,
               "metrics_port": ports["metrics"]}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the namespace's init: every process of this cluster goes with it
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
