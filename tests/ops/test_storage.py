"""The driver's shared-storage check: every node must see the run folder before training writes shards into it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hh_ray.ops.storage import CHECK_DIR, check_shared_folder

SCENARIO = Path(__file__).with_name("storage_scenario.py")


def test_local_ray_sees_its_own_run_folder(ray_local, tmp_path):
    views = check_shared_folder(tmp_path / "run")
    assert len(views) == len([n for n in ray_local.nodes() if n["Alive"]]) and all(v.saw_driver_token for v in views)
    assert list((tmp_path / "run" / CHECK_DIR).iterdir()) == []  # the tokens are cleaned up


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare and root for a node with a private mount")
def test_a_node_that_does_not_see_the_folder_fails_the_check_by_name():
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(SCENARIO)],
                          capture_output=True, text=True, timeout=400, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("SCENARIO ")]
    assert proc.returncode == 0 and lines, f"scenario failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    obs = json.loads(lines[-1].removeprefix("SCENARIO "))
    shutil.rmtree(obs["tmp"], ignore_errors=True)  # the cluster ended with the namespace
    assert obs["shared_nodes"] == 2 and obs["leftovers"] == []  # head and a worker on the same folder pass
    err = obs["error"]
    assert err is not None and "is not shared by every node" in err
    assert f"({obs['isolated'][:8]}): cannot read" in err  # names the node that sees another folder
    assert err.count("): ") == 1  # and only that one
    assert "Mount shared storage there on every node" in err
