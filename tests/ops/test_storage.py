"""The driver's shared-storage check: every node must see the run folder before training writes shards into it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ray_nodes import run_scenario

from hh_ray.ops.storage import CHECK_DIR, check_shared_folder

SCENARIO = Path(__file__).with_name("storage_scenario.py")


def test_local_ray_sees_its_own_run_folder(ray_local, tmp_path):
    views = check_shared_folder(tmp_path / "run")
    assert len(views) == len([n for n in ray_local.nodes() if n["Alive"]]) and all(v.saw_driver_token for v in views)
    assert list((tmp_path / "run" / CHECK_DIR).iterdir()) == []  # the tokens are cleaned up


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare and root for a node with a private mount")
def test_a_node_that_does_not_see_the_folder_fails_the_check_by_name():
    obs, proc = run_scenario(SCENARIO, 400)
    assert proc.returncode == 0, f"scenario failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    shutil.rmtree(obs["tmp"], ignore_errors=True)  # the cluster ended with the namespace
    assert obs["shared_nodes"] == 2 and obs["leftovers"] == []  # head and a worker on the same folder pass
    err = obs["error"]
    assert err is not None and "is not shared by every node" in err
    assert f"({obs['isolated'][:8]}): cannot read" in err  # names the node that sees another folder
    assert err.count("): ") == 1  # and only that one
    assert "Mount shared storage there on every node" in err
