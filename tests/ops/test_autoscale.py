"""Rollout autoscaling on Ray's fake multi-node autoscaler, in a private PID namespace.

`AutoscalingCluster` runs `ray stop --force`, which kills every Ray process it can see, so the scenario runs
under `unshare --pid --fork --mount-proc` where it sees only its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ray_nodes import run_scenario

SCENARIO = Path(__file__).with_name("autoscale_scenario.py")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare for a private PID namespace")
@pytest.mark.slow  # kept out of the default suite for time; run with -m slow
def test_engines_grow_on_new_nodes_survive_a_death_and_shrink():
    obs, proc = run_scenario(SCENARIO, 900)
    assert proc.returncode == 0, (obs, proc.stderr[-3000:])
    # grow: backlog 24 at 8 per engine -> 3 engines, the new ones on new nodes (the head had CPU for one)
    assert obs["grow"]["added"] == 2 and obs["grow"]["engines"] == 3
    assert len(set(obs["engine_nodes"])) == 3 and obs["nodes_grown"] == obs["nodes_start"] + 2
    # new engines serve the current policy: same version, same weights as the first engine
    assert obs["versions"] == [1, 1, 1]
    assert max(obs["weight_sums"]) - min(obs["weight_sums"]) < 1e-6
    # an engine killed mid-batch: its prompts were re-queued, nothing lost, nothing delivered twice
    assert obs["after_kill_outputs"] == 24 and obs["requeued_chunks"] >= 1 and obs["engines_after_kill"] == 2
    assert obs["sync_after_kill_bytes"] > 0 and obs["versions_after_kill"] == [2, 2]
    assert obs["generated_counts"] == [1] and obs["generated_keys"] == 4 + 24 + 8
    # quiet: back to min_engines, and the autoscaler retires the idle nodes
    assert obs["shrink"]["engines"] == 1 and obs["generate_after_shrink"] == 2
    assert obs["nodes_end"] == obs["nodes_start"]
