"""GPU-side decisions as pure functions: engine bundles and vLLM settings per TP size, devices, LOCAL_RANK."""

from __future__ import annotations

import pytest

from hh_ray.config import ConfigError, PlacementConfig, PPOConfig, RolloutConfig, TrainerConfig, load_config
from hh_ray.workers.device import (
    DeviceError,
    check_device,
    device_from_config,
    local_rank,
    process_env,
    torch_device,
)
from hh_ray.workers.placement import (
    NODE_MARKER,
    engine_env_to_clear,
    engine_placement,
    executor_backend,
    per_request_seeds,
    ppo_group_placements,
    vllm_engine_kwargs,
    worker_placement,
)


def gpu_engine(tp: int, **kw) -> RolloutConfig:
    return RolloutConfig(cpus_per_engine=8.0, gpus_per_engine=1.0, tensor_parallel_size=tp,
                         node_resource="hh_rollout_node", **kw)


def test_tp1_engine_is_one_bundle_and_runs_in_process():
    pl = engine_placement(gpu_engine(1))
    assert pl.bundles == [{"CPU": 8.0, "GPU": 1.0, "hh_rollout_node": NODE_MARKER}]
    assert (pl.actor_cpus, pl.actor_gpus, pl.actor_bundles, pl.capture_child_tasks) == (8.0, 1.0, [0], False)
    kw = vllm_engine_kwargs(gpu_engine(1), True, "/m", 1544, 7)
    assert kw["distributed_executor_backend"] == "uni" and kw["tensor_parallel_size"] == 1
    assert engine_env_to_clear(gpu_engine(1), True) == ()


@pytest.mark.parametrize("tp", [2, 4])
def test_tensor_parallel_engine_gets_one_gpu_bundle_per_rank_and_the_ray_executor(tp):
    pl = engine_placement(gpu_engine(tp))
    # vLLM's Ray executor refuses a bundle with more than one GPU and puts one worker on each GPU bundle
    assert [b["GPU"] for b in pl.bundles] == [1.0] * tp and all(b["GPU"] <= 1 for b in pl.bundles)
    assert pl.bundles[0]["CPU"] == 8.0 and all("CPU" not in b for b in pl.bundles[1:])
    assert all(b["hh_rollout_node"] == NODE_MARKER for b in pl.bundles)
    # the engine actor holds CPUs only; its vLLM workers are child tasks captured in the engine's group
    assert (pl.actor_cpus, pl.actor_gpus, pl.capture_child_tasks, pl.strategy) == (8.0, 0.0, True, "STRICT_PACK")
    assert pl.gpus == tp
    kw = vllm_engine_kwargs(gpu_engine(tp), True, "/m", 1544, 7)
    assert kw["distributed_executor_backend"] == "ray" and kw["tensor_parallel_size"] == tp
    assert engine_env_to_clear(gpu_engine(tp), True) == ("CUDA_VISIBLE_DEVICES",)


def test_engine_settings_gpu_versus_cpu():
    gpu = vllm_engine_kwargs(gpu_engine(1), True, "/m", 1544, 3)
    assert gpu["enforce_eager"] is False  # CUDA graphs by default
    assert gpu["dtype"] == "bfloat16" and gpu["gpu_memory_utilization"] == 0.5 and "kv_cache_memory_bytes" not in gpu
    assert vllm_engine_kwargs(gpu_engine(1, enforce_eager=True), True, "/m", 1544, 3)["enforce_eager"] is True
    cpu_cfg = RolloutConfig(kv_cache_gb=0.5)
    cpu = vllm_engine_kwargs(cpu_cfg, False, "/m", 300, 3)
    assert cpu["enforce_eager"] is True and cpu["dtype"] == "float32"
    assert cpu["kv_cache_memory_bytes"] == 2**29 and cpu["enable_chunked_prefill"] is False
    assert cpu["max_num_batched_tokens"] == 8192 and cpu["seed"] == 3
    # a CPU engine never picks the Ray executor (there is no GPU bundle for its workers)
    assert executor_backend(RolloutConfig(tensor_parallel_size=2), False) == "mp"
    assert executor_backend(RolloutConfig(executor_backend="mp", tensor_parallel_size=2), True) == "mp"


def test_seeds_per_engine_on_gpu_per_request_on_cpu():
    assert per_request_seeds(gpu_engine(1), on_gpu=True) is False
    assert per_request_seeds(RolloutConfig(), on_gpu=False) is True
    assert per_request_seeds(gpu_engine(1, seed_mode="request"), on_gpu=True) is True
    assert per_request_seeds(RolloutConfig(seed_mode="engine"), on_gpu=False) is False


def test_groups_carry_their_node_type_marker():
    ppo = PPOConfig(placement=PlacementConfig(reference_gpus=0.5, reference_node_resource="hh_trainer_node"),
                    policy_trainer=TrainerConfig(num_ranks=3, cpus_per_rank=8, gpus_per_rank=1,
                                                 node_resource="hh_trainer_node"),
                    rollout=RolloutConfig(max_engines=2, num_engines=1))
    groups = ppo_group_placements(ppo)
    # the driver's creation order: largest first, so whole-node trainer groups get their nodes; engines last
    assert list(groups) == ["policy-trainer", "critic-trainer", "reference", "pm-scorer", "rollout-0", "rollout-1"]
    assert groups["policy-trainer"].bundles == [{"CPU": 8, "GPU": 1, "hh_trainer_node": NODE_MARKER}] * 3
    assert groups["reference"].bundles == [{"CPU": 0.25, "GPU": 0.5, "hh_trainer_node": NODE_MARKER}]
    assert groups["pm-scorer"].bundles == [{"CPU": 0.25}]  # no marker: any node
    assert worker_placement(2, 1.0).bundles == [{"CPU": 1.0}, {"CPU": 1.0}]


def test_tensor_parallel_needs_whole_gpus_per_rank():
    with pytest.raises(ConfigError, match="gpus_per_engine: with tensor_parallel_size 2 each rank takes one whole"):
        load_config(None, ["ppo.rollout.tensor_parallel_size=2", "ppo.rollout.gpus_per_engine=0.5"])
    with pytest.raises(ConfigError, match="seed_mode"):
        load_config(None, ["ppo.rollout.seed_mode=sometimes"])
    with pytest.raises(ConfigError, match="executor_backend"):
        load_config(None, ["ppo.rollout.executor_backend=threads"])


def test_device_follows_the_config_not_the_process():
    assert device_from_config(1.0) == "cuda" and device_from_config(0.5) == "cuda" and device_from_config(0) == "cpu"
    assert torch_device(0.0, ["3"], "3") == "cpu"
    with pytest.raises(DeviceError, match="group 'critic' is configured with GPUs but this process sees no CUDA"):
        check_device(True, False, "critic")
    check_device(False, False, "reference")  # CPU groups need nothing
    assert process_env(True, {"TORCHDYNAMO_DISABLE": "1"}) == {"TORCHDYNAMO_DISABLE": "0"}
    assert process_env(False, {}) == {"TORCHDYNAMO_DISABLE": "1"}


def test_local_rank_from_ray_gpu_ids_and_visible_devices():
    # Ray's default: CUDA_VISIBLE_DEVICES is the actor's own GPU, so torch sees it as device 0
    assert local_rank(["5"], "5") == 0
    # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: every GPU visible; the actor's Ray id is found in the list
    assert local_rank(["5"], "0,1,2,3,4,5,6,7") == 5
    assert local_rank([6], "4,5,6,7") == 2  # a node that exposes only some GPUs
    assert local_rank(["3"], None) == 3 and local_rank(["3"], "") == 3
    assert local_rank([], None) == 0
    assert torch_device(1.0, ["5"], "0,1,2,3,4,5,6,7") == "cuda:5"
    with pytest.raises(DeviceError, match="Ray assigned GPU 2 but CUDA_VISIBLE_DEVICES=0,1"):
        local_rank(["2"], "0,1")
