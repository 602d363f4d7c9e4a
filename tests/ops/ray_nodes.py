"""Several Ray nodes on one machine, each from `ray start` with its own free ports, bound to 127.0.0.1.

Used by scenario scripts that run as PID 1 of their own namespace (`unshare --pid --fork --mount-proc`): when
the script exits, every node it started goes with it. Fake GPUs and custom resources come from `--num-gpus` and
`--resources`; `wrap` prefixes the command (e.g. `unshare --mount` with a private mount for one node).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hh_ray.workers.group import free_port

RAY = str(Path(sys.executable).parent / "ray")


def _ports(head: bool) -> list[str]:
    names = ["node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port"] + (["ray-client-server-port"] if head else [])
    return [f"--{n}={free_port()}" for n in names]


def start_node(head_address: str | None, tmp: Path, num_cpus: float, num_gpus: int = 0,
               resources: dict | None = None, wrap: list[str] | tuple = ()) -> str:
    """Start a head (`head_address` None) or a worker joined to it; returns the head's GCS address."""
    proc, head_address = launch_node(head_address, tmp, num_cpus, num_gpus, resources, wrap)
    finish(proc)
    return head_address


def finish(proc: subprocess.Popen) -> None:
    """Wait for a `ray start` to return (it leaves its daemons running) and fail loudly if it did not work."""
    out, err = proc.communicate(timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed ({proc.returncode}): {err[-2000:]}")


def launch_node(head_address: str | None, tmp: Path, num_cpus: float, num_gpus: int = 0,
                resources: dict | None = None, wrap: list[str] | tuple = ()) -> tuple[subprocess.Popen, str]:
    """Begin `ray start` (several workers may start side by side); returns the process and the head address."""
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    cmd = [*wrap, RAY, "start", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
           "--disable-usage-stats", *_ports(head_address is None)]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    if head_address is None:
        gcs = free_port()
        cmd += ["--head", f"--port={gcs}", "--include-dashboard=false", f"--temp-dir={tmp / 'ray'}"]
        head_address = f"127.0.0.1:{gcs}"
    else:
        cmd.append(f"--address={head_address}")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), head_address


def wait_for_nodes(count: int, timeout_s: float = 120.0) -> list[dict]:
    import ray

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) >= count:
            return alive
        time.sleep(0.5)
    raise RuntimeError(f"only {len(alive)} of {count} Ray nodes came up")


def run_scenario(script: Path, timeout_s: float) -> tuple[dict, subprocess.CompletedProcess]:
    """Run a scenario script as PID 1 of its own PID namespace (its Ray nodes die with it); returns the
    observations it printed last (`SCENARIO {json}`) and the finished process."""
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(script)],
                          capture_output=True, text=True, timeout=timeout_s, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SCENARIO ")]
    assert lines, f"scenario printed nothing (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1].removeprefix("SCENARIO ")), proc
