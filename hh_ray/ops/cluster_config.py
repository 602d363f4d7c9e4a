"""Offline checks of cluster configs: Ray's own launcher validation, KubeRay manifests against the CRD schema."""

from __future__ import annotations

import gzip
from pathlib import Path

import yaml


class ClusterConfigError(ValueError):
    """A cluster config that Ray or KubeRay would reject; the message names the file and the field."""


def validate_launcher_config(path: str | Path) -> dict:
    """Fill Ray's defaults and run its validator; also reject worker types that declare no resources."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    p = Path(path)
    raw = yaml.safe_load(p.read_text())
    try:
        for name, node in (raw.get("available_node_types") or {}).items():
            declares_none = "resources" in node and not any((node["resources"] or {}).values())
            if name != raw.get("head_node_type") and declares_none:
                raise ClusterConfigError(f"worker type '{name}' declares no resources (CPU/GPU/custom), "
                                         "so the autoscaler could never place work on it")
        config = prepare_config(raw)
        validate_config(config)
    except ClusterConfigError as exc:
        raise ClusterConfigError(f"{p}: {exc}") from None
    except Exception as exc:  # jsonschema.ValidationError, ValueError from Ray's checks
        where = "/".join(str(x) for x in getattr(exc, "absolute_path", [])) or "(top level)"
        msg = getattr(exc, "message", str(exc))
        raise ClusterConfigError(f"{p}: invalid cluster config at {where}: {msg}") from None
    return config


def crd_schema(crd_dir: str | Path, kind: str) -> dict:
    """The openAPIV3Schema of a KubeRay CRD (`ray.io_<plural>.yaml.gz`) for the served version."""
    plural = {"RayCluster": "rayclusters", "RayJob": "rayjobs"}[kind]
    doc = yaml.safe_load(gzip.open(Path(crd_dir) / f"ray.io_{plural}.yaml.gz", "rt").read())
    for v in doc["spec"]["versions"]:
        if v.get("served") and v.get("storage"):
            return v["schema"]["openAPIV3Schema"]
    raise ClusterConfigError(f"no served storage version in the {kind} CRD")


def validate_kuberay(path: str | Path, crd_dir: str | Path) -> dict:
    """Validate a RayCluster or RayJob manifest against the operator's own schema (what the API server applies)."""
    import jsonschema

    p = Path(path)
    manifest = yaml.safe_load(p.read_text())
    kind = manifest.get("kind")
    if kind not in ("RayCluster", "RayJob"):
        raise ClusterConfigError(f"{p}: kind '{kind}' is not RayCluster or RayJob")
    schema = crd_schema(crd_dir, kind)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(x) for x in e.absolute_path) or "(top level)"
        raise ClusterConfigError(f"{p}: {kind} invalid at {where}: {e.message}")
    return manifest
