"""Run as PID 1 of its own namespace: fake-GPU nodes of the shipped node types, then the placement groups of
the 8-GPU and multi-node jobs exactly as the driver creates them; prints where every bundle landed.

Nodes: a head with no CPUs (as in cluster/*.yaml), two 8-GPU trainer nodes (hh_trainer_node) and two 1-GPU
rollout nodes (hh_rollout_node). The multi-node job runs with 2 engines here (its groups are otherwise as
shipped). Placement only: no CUDA, no models.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group  # noqa: E402
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa: E402
from ray_nodes import start_node, wait_for_nodes  # noqa: E402

from hh_ray.config import load_config  # noqa: E402
from hh_ray.workers.placement import ppo_group_placements  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@ray.remote(num_cpus=0, num_gpus=1)
def vllm_worker_probe() -> list[str]:
    """What vLLM's Ray executor starts on each GPU bundle of a tensor-parallel engine."""
    return [str(i) for i in ray.get_gpu_ids()]


class EngineProbe:
    """Stands in for the engine actor: started with the engine's actor options, it launches one GPU task per
    GPU bundle of its own placement group, as vLLM's executor does."""

    def gpu_tasks(self) -> list[dict]:
        if ray.get_gpu_ids():  # tensor-parallel 1: the engine runs in-process on its own GPU
            return [{"bundle": 0, "gpu_ids": [str(i) for i in ray.get_gpu_ids()], "in_actor": True}]
        pg = ray.util.get_current_placement_group()
        out = []
        for i, bundle in enumerate(pg.bundle_specs):
            if bundle.get("GPU"):
                ref = vllm_worker_probe.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i)).remote()
                out.append({"bundle": i, "gpu_ids": ray.get(ref, timeout=60)})
        return out


def place(job: str, overrides: list[str]) -> dict:
    cfg = load_config(ROOT / "jobs" / job, overrides)
    node_resources = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
    out, pgs = {}, []
    for name, plan in ppo_group_placements(cfg.ppo).items():
        pg = placement_group(plan.bundles, strategy=plan.strategy, name=f"{name}-pg")
        pgs.append(pg)
        ready, _ = ray.wait([pg.ready()], timeout=60)
        if not ready:
            out[name] = {"placed": False}
            continue
        nodes = placement_group_table(pg)["bundles_to_node_id"]
        out[name] = {"placed": True, "bundles": plan.bundles,
                     "nodes": [nodes[i] for i in range(len(plan.bundles))],
                     "node_resources": [node_resources[nodes[i]] for i in range(len(plan.bundles))]}
        if name.startswith("rollout-"):
            actor = ray.remote(EngineProbe).options(
                num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=plan.actor_bundles[0],
                    placement_group_capture_child_tasks=plan.capture_child_tasks)).remote()
            out[name]["gpu_tasks"] = ray.get(actor.gpu_tasks.remote(), timeout=120)
            ray.kill(actor)
    for pg in pgs:
        remove_placement_group(pg)
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hh-place-"))
    head = start_node(None, tmp, num_cpus=0)
    for _ in range(2):  # one at a time: side by side they can time out on a small machine
        start_node(head, tmp, num_cpus=96, num_gpus=8, resources={"hh_trainer_node": 1})
    for _ in range(2):
        start_node(head, tmp, num_cpus=8, num_gpus=1, resources={"hh_rollout_node": 1})
    ray.init(address=head, log_to_driver=False, _node_ip_address="127.0.0.1")
    wait_for_nodes(5)
    obs = {"tmp": str(tmp), "8gpu": place("ppo-7b-8gpu.yaml", []),
           "multinode": place("ppo-multinode.yaml", ["ppo.rollout.num_engines=2", "ppo.rollout.min_engines=2",
                                                     "ppo.rollout.max_engines=2"])}
    print("SCENARIO " + json.dumps(obs), flush=True)


if __name__ == "__main__":
    main()
