"""Cluster configs pass Ray's own validator and the KubeRay operator's CRD schemas; broken ones are rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hh_ray.ops.cluster_config import ClusterConfigError, validate_kuberay, validate_launcher_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


@pytest.fixture(scope="module")
def crd_dir(hh_dir):
    d = hh_dir.parent / "kuberay-crds"
    assert (d / "ray.io_rayclusters.yaml.gz").is_file(), d
    return d


def test_launcher_config_passes_rays_validator():
    config = validate_launcher_config(CLUSTER / "aws-gpu.yaml")
    types = config["available_node_types"]
    assert types["gpu-8x-h100"]["resources"]["GPU"] == 8
    assert types["gpu-1x-rollout"]["min_workers"] == 0 and types["gpu-1x-rollout"]["max_workers"] == 8


def _broken(tmp_path, mutate) -> Path:
    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    mutate(raw)
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_broken_launcher_configs_are_rejected_clearly(tmp_path):
    def no_resources(raw):
        raw["available_node_types"]["gpu-1x-rollout"]["resources"] = {}

    with pytest.raises(ClusterConfigError, match="worker type 'gpu-1x-rollout' declares no resources"):
        validate_launcher_config(_broken(tmp_path, no_resources))

    def missing_resources(raw):
        del raw["available_node_types"]["gpu-1x-rollout"]["resources"]

    with pytest.raises(ClusterConfigError, match="'resources' is a required property"):
        validate_launcher_config(_broken(tmp_path, missing_resources))

    def fractional_gpu(raw):
        raw["available_node_types"]["gpu-8x-h100"]["resources"]["GPU"] = "eight"

    with pytest.raises(ClusterConfigError, match="available_node_types/gpu-8x-h100/resources/GPU"):
        validate_launcher_config(_broken(tmp_path, fractional_gpu))

    def too_few_workers(raw):
        raw["max_workers"] = 1
        raw["available_node_types"]["gpu-1x-rollout"]["min_workers"] = 4

    with pytest.raises(ClusterConfigError, match="max_workers"):
        validate_launcher_config(_broken(tmp_path, too_few_workers))


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_match_operator_schema(crd_dir, name):
    m = validate_kuberay(CLUSTER / name, crd_dir)
    spec = m["spec"] if m["kind"] == "RayCluster" else m["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert any(g["maxReplicas"] > g["minReplicas"] for g in spec["workerGroupSpecs"])


def test_broken_kuberay_manifest_is_rejected(crd_dir, tmp_path):
    m = yaml.safe_load((CLUSTER / "raycluster.yaml").read_text())
    m["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "two"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(m))
    with pytest.raises(ClusterConfigError,
                       match=r"spec.workerGroupSpecs.0.maxReplicas: 'two' is not of type 'integer'"):
        validate_kuberay(p, crd_dir)
    del m["spec"]["headGroupSpec"]
    p.write_text(yaml.safe_dump(m))
    with pytest.raises(ClusterConfigError, match="headGroupSpec"):
        validate_kuberay(p, crd_dir)


def test_grafana_dashboard_plots_every_metric():
    from hh_ray.ops.metrics import GAUGES

    dash = json.loads((CLUSTER / "grafana-hh-ray.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for name in list(GAUGES) + ["phase_seconds"]:
        assert f"ray_hh_ray_{name}" in exprs, name
