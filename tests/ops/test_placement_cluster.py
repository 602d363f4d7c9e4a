"""The shipped GPU jobs' groups on a Ray cluster of fake-GPU nodes with the node-type markers of cluster/*.yaml:
every bundle lands on the node type it asks for; a tensor-parallel engine's vLLM workers get one GPU each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ray_nodes import run_scenario

SCENARIO = Path(__file__).with_name("placement_scenario.py")


@pytest.fixture(scope="module")
def placed():
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare for a private PID namespace")
    obs, proc = run_scenario(SCENARIO, 600)
    assert proc.returncode == 0, f"scenario failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    shutil.rmtree(obs.pop("tmp"), ignore_errors=True)  # the cluster ended with the namespace
    return obs


def _markers(resources: dict) -> set[str]:
    return {k for k in resources if k.startswith("hh_")}


@pytest.mark.parametrize("job", ["8gpu", "multinode"])
def test_every_bundle_lands_on_the_node_type_it_asks_for(placed, job):
    for name, g in placed[job].items():
        assert g["placed"], f"{job}: group {name} was not placed"
        for bundle, res in zip(g["bundles"], g["node_resources"]):
            asked = _markers(bundle)
            assert asked and asked <= _markers(res), (name, bundle, res)
            assert res.get("GPU", 0) >= bundle.get("GPU", 0)


def test_8gpu_job_tp2_engine_gets_a_gpu_per_rank_on_one_node(placed):
    engine = placed["8gpu"]["rollout-0"]
    assert len(set(engine["nodes"])) == 1 and len(engine["bundles"]) == 2
    # the engine actor holds no GPU; the two child tasks (vLLM's workers) each got their own
    tasks = engine["gpu_tasks"]
    assert [t["bundle"] for t in tasks] == [0, 1] and not any(t.get("in_actor") for t in tasks)
    assert all(len(t["gpu_ids"]) == 1 for t in tasks) and tasks[0]["gpu_ids"] != tasks[1]["gpu_ids"]
    for name in ("policy-trainer", "critic-trainer"):  # STRICT_PACK: each trainer group on one node
        assert len(set(placed["8gpu"][name]["nodes"])) == 1


def test_multinode_job_trainers_own_the_8gpu_nodes_engines_the_single_gpu_nodes(placed):
    job = placed["multinode"]
    policy, critic = set(job["policy-trainer"]["nodes"]), set(job["critic-trainer"]["nodes"])
    assert len(policy) == 1 and len(critic) == 1 and policy != critic
    assert set(job["reference"]["nodes"]) == set(job["pm-scorer"]["nodes"]) == critic  # the two spare GPUs
    for name in ("rollout-0", "rollout-1"):
        assert job[name]["node_resources"][0]["GPU"] == 1 and job[name]["gpu_tasks"][0]["in_actor"]
    assert job["rollout-0"]["nodes"] != job["rollout-1"]["nodes"]
