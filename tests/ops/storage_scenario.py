"""Run as PID 1 of its own namespace: a Ray head and a worker that share the run folder pass the storage check;
then a worker whose mount namespace has its own (empty) folder at that path joins, and the check must fail
naming it. Prints one JSON line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402
from ray_nodes import start_node, wait_for_nodes  # noqa: E402

from hh_ray.ops.storage import SharedStorageError, check_shared_folder  # noqa: E402


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hh-storage-"))
    run_dir = tmp / "shared" / "runs" / "job"
    run_dir.mkdir(parents=True)
    head = start_node(None, tmp, num_cpus=1)
    start_node(head, tmp, num_cpus=1)
    ray.init(address=head, log_to_driver=False, _node_ip_address="127.0.0.1")
    wait_for_nodes(2)
    obs: dict = {"tmp": str(tmp), "shared_nodes": len(check_shared_folder(run_dir)),
                 "leftovers": sorted(p.name for p in (run_dir / ".hh-ray-storage-check").iterdir())}
    before = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    # this node sees an empty tmpfs at the shared folder: its own local disk, as on a node without the mount
    private = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"',
               str(tmp / "shared")]
    start_node(head, tmp, num_cpus=1, wrap=private)
    obs["isolated"] = next(n["NodeID"] for n in wait_for_nodes(3) if n["NodeID"] not in before)
    try:
        check_shared_folder(run_dir, timeout_s=60)
        obs["error"] = None
    except SharedStorageError as exc:
        obs["error"] = str(exc)
    print("SCENARIO " + json.dumps(obs), flush=True)


if __name__ == "__main__":
    main()
