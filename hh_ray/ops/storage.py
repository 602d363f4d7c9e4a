"""Shared storage check: every Ray node must see the run folder before a job trains into it.

Multi-node ZeRO ranks write their checkpoint shards into the run folder; if a node has its own local folder at
that path, its shards land there and the checkpoint is incomplete (and resuming fails). The check: the driver
writes a token file into the run folder; a task pinned to each alive node reads that token and answers with a
file of its own; the driver reads every node's file back. A node that sees another folder fails one of the two.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from hh_ray.files import write_text_atomic

CHECK_DIR = ".hh-ray-storage-check"


class SharedStorageError(RuntimeError):
    """Some node does not see the run folder the driver sees; the message names the nodes and the folder."""


@dataclass(frozen=True)
class NodeView:
    node_id: str
    address: str
    saw_driver_token: bool
    error: str = ""


def _node_probe(folder: str, token: str, node_id: str) -> NodeView:
    """Runs on one node: read the driver's token, answer with this node's own file."""
    import ray

    address = ray.util.get_node_ip_address()
    check = Path(folder)
    try:
        seen = (check / "driver").read_text() == token
    except OSError as exc:
        return NodeView(node_id, address, False, f"cannot read {check / 'driver'}: {exc.strerror or exc}")
    if not seen:
        return NodeView(node_id, address, False, "sees a different token file")
    try:
        write_text_atomic(check / f"node-{node_id}", token)
    except OSError as exc:
        return NodeView(node_id, address, True, f"cannot write into {check}: {exc.strerror or exc}")
    return NodeView(node_id, address, True)


def check_shared_folder(folder: str | os.PathLike, timeout_s: float = 120.0) -> list[NodeView]:
    """Raise SharedStorageError unless every alive node reads and writes the same `folder` as the driver.

    Uses zero-CPU tasks pinned to each node (a head with `num-cpus 0` is checked too). Returns each node's view.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    check = root / CHECK_DIR / token
    check.mkdir(parents=True)
    try:
        write_text_atomic(check / "driver", token)
        probe = ray.remote(num_cpus=0, max_retries=0)(_node_probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(check), token, n["NodeID"]) for n in nodes]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        views = [ray.get(r) for r in ready]
        problems = [f"node {v.address} ({v.node_id[:8]}): {v.error}" for v in views if v.error]
        for v in views:
            if not v.error and not (check / f"node-{v.node_id}").is_file():
                problems.append(f"node {v.address} ({v.node_id[:8]}): its file did not appear in the driver's folder")
        if pending:
            problems.append(f"{len(pending)} node(s) did not answer within {timeout_s:.0f} s")
        if problems:
            raise SharedStorageError(
                f"run folder {root} is not shared by every node: " + "; ".join(problems)
                + ". Mount shared storage there on every node (cluster/*.yaml mount /mnt/shared), or point run_dir "
                "at a shared folder.")
        return views
    finally:
        shutil.rmtree(check, ignore_errors=True)
