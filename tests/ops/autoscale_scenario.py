"""Run inside its own PID namespace (AutoscalingCluster runs `ray stop --force`): grow, fail, shrink.

Prints one JSON line of observations for tests/ops/test_autoscale.py to check.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
import yaml  # noqa: E402

# Ray 2.60's wheel lacks the fake provider's base config that AutoscalingCluster reads; write our own.
BASE = {
    "cluster_name": "fake_multinode", "max_workers": 8,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "available_node_types": {}, "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1, "docker": {}, "initialization_commands": [], "setup_commands": [],
    "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
    "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}
example = Path(ray.__file__).parent / "autoscaler" / "_private" / "fake_multi_node" / "example.yaml"
if not example.is_file():
    example.write_text(yaml.safe_dump(BASE))

from ray.cluster_utils import AutoscalingCluster  # noqa: E402

from hh_ray.algo.batch import PolicyBatch  # noqa: E402
from hh_ray.config import RolloutConfig, TrainerConfig  # noqa: E402
from hh_ray.data.tokenize import train_tokenizer  # noqa: E402
from hh_ray.models.objectives import PolicyObjective  # noqa: E402
from hh_ray.models.presets import build_preset  # noqa: E402
from hh_ray.ops.autoscale import RolloutAutoscaler  # noqa: E402
from hh_ray.workers.rollout import RolloutGroup, Sampling  # noqa: E402
from hh_ray.workers.trainer import TrainerGroup  # noqa: E402


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"])


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    texts = [f"\n\nHuman: question {i} about bread and dogs\n\nAssistant: answer {i} with some words"
             for i in range(200)]
    tok = train_tokenizer(texts, 400, tmp / "tok")
    model = str(build_preset("tiny", tok, tmp / "tiny"))
    cluster = AutoscalingCluster(
        head_resources={"CPU": 2},
        worker_node_types={"cpu-node": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0,
                                        "max_workers": 2}},
        idle_timeout_minutes=0.15,
    )
    cluster.start()
    obs: dict = {}
    try:
        ray.init("auto")
        obs["nodes_start"] = alive_nodes()
        trainer = TrainerGroup("policy-trainer", model, "causal_lm",
                               TrainerConfig(cpus_per_rank=0.5, micro_batch_size=4, lr=5e-3))
        cfg = RolloutConfig(num_engines=1, min_engines=1, max_engines=3, cpus_per_engine=1.0, kv_cache_gb=0.1)
        rollout = RolloutGroup(model, cfg, 128)
        rollout.connect(trainer, 1 << 20, timeout_s=60)
        prompts = [tok(f"\n\nHuman: question {i}\n\nAssistant:")["input_ids"] for i in range(24)]
        s = Sampling(max_new_tokens=24, n=1)
        out = rollout.generate(prompts[:4], s, list(range(4)))
        trainer.train(PolicyBatch(prompts[:4], [o.response for o in out], [o.logprobs for o in out],
                                  [[1.0] * len(o.response) for o in out]), PolicyObjective())
        rollout.ensure(1)

        scaler = RolloutAutoscaler(rollout, 1, 3, backlog_per_engine=8, scale_down_idle_s=2.0,
                                   placement_timeout_s=240)
        t0 = time.time()
        obs["grow"] = scaler.adjust(24)
        obs["grow_seconds"] = time.time() - t0
        obs["engine_nodes"] = ray.get([e.node_id.remote() for e in rollout.engines])
        obs["head_node"] = ray.get_runtime_context().get_node_id()
        obs["versions"] = ray.get([e.policy_version.remote() for e in rollout.engines])
        obs["weight_sums"] = ray.get([e.weight_sum.remote() for e in rollout.engines])
        obs["nodes_grown"] = alive_nodes()

        # an engine dies while the batch is handed out (ray.kill is asynchronous: the call reaches a dying actor)
        victim = rollout.engines[-1]
        ray.kill(victim)
        results = {"out": rollout.generate(prompts, s, list(range(100, 124)))}
        obs["after_kill_outputs"] = len(results["out"])
        obs["requeued_chunks"] = rollout.requeued_chunks
        obs["engines_after_kill"] = len(rollout.engines)
        # the dead engine left the sync group: the next sync rebuilds it and reaches every engine left
        obs["sync_after_kill_bytes"] = rollout.ensure(2).bytes
        obs["versions_after_kill"] = ray.get([e.policy_version.remote() for e in rollout.engines])
        out2 = rollout.generate(prompts[:8], s, list(range(200, 208)))
        obs["generated_counts"] = sorted(set(rollout.generated.values()))
        obs["generated_keys"] = len(rollout.generated)

        # quiet: demand below capacity for longer than scale_down_idle_s -> shrink to min, nodes go away
        scaler.adjust(2)
        time.sleep(2.5)
        obs["shrink"] = scaler.adjust(2)
        obs["generate_after_shrink"] = len(rollout.generate(prompts[:2], s, [300, 301]))
        deadline = time.time() + 150
        while alive_nodes() > obs["nodes_start"] + 0 and time.time() < deadline:
            time.sleep(3)
        obs["nodes_end"] = alive_nodes()
        obs["outputs_ok"] = len(out2) == 8
    finally:
        print("SCENARIO " + json.dumps(obs), flush=True)
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
