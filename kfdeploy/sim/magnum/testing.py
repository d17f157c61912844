"""Helpers for tests that run kfdeploy against the in-process emulator.

with running(fast_config(tmp_path)) as em:
    clouds = em.write_clouds_yaml(tmp_path / "clouds.yaml")
    env_file = write_environment(tmp_path, "staging", cloud=LOCAL_CLOUD)
    ...
    assert mutating_requests(em) == []
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from kfdeploy.sim.magnum.config import Delays, EmulatorConfig
from kfdeploy.sim.magnum.server import MUTATING, Emulator

# Environment variables that make kfdeploy poll and retry quickly against the emulator.
FAST_ENV = {
    "KFDEPLOY_MAGNUM_POLL": "0.2",
    "KFDEPLOY_MAGNUM_POLL_MAX": "1",
    "KFDEPLOY_MAGNUM_RETRY_DELAY": "0.1",
}


def fast_config(state_dir: Path, backend: str = "fake", **overrides: Any) -> EmulatorConfig:
    delays = Delays(
        cluster_create=1.0,
        cluster_delete=0.5,
        nodegroup_create=0.5,
        nodegroup_delete=0.5,
        resize=0.5,
        upgrade=0.5,
        update=0.3,
    )
    return EmulatorConfig(state_dir=state_dir, backend=backend, delays=delays, **overrides)


def magnum_requests(em: Emulator) -> list[dict[str, Any]]:
    return [r for r in em.requests() if r["path"].startswith("/magnum/")]


def mutating_requests(em: Emulator) -> list[dict[str, Any]]:
    """Requests that could change the cloud (Magnum POST/PATCH/PUT/DELETE)."""
    return [r for r in magnum_requests(em) if r["method"] in MUTATING]


def staging_environment(cloud: str, **cluster: Any) -> dict[str, Any]:
    """A cern-staging-shaped environment: site template labels, 3 masters, autoscaling default
    workers and a tainted A100 nodegroup."""
    section: dict[str, Any] = {
        "provider": "magnum",
        "cloud": cloud,
        "template": {
            "name": "kubernetes-1.36-cern",
            "create": True,
            "image": "fedora-coreos-40",
            "labels": {
                "kube_tag": "v1.36.3",
                "cern_enabled": "true",
                "nvidia_gpu_enabled": "true",
                "ingress_controller": "nginx",
                "container_infra_prefix": "registry.cern.ch/magnum/",
            },
        },
        "masters": {"flavor": "m2.medium", "count": 3},
        "workers": {
            "name": "default-worker",
            "flavor": "m2.xlarge",
            "count": 3,
            "min": 1,
            "max": 6,
        },
        "nodegroups": [
            {
                "name": "gpu-a100",
                "flavor": "g1.a100.x2",
                "count": 2,
                "min": 0,
                "max": 4,
                "gpus": 2,
                "labels": {"nvidia.com/gpu.present": "true"},
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
            }
        ],
        "create_timeout": 600,
    }
    section.update(cluster)
    return {
        "description": "cern-staging-shaped test environment",
        "kubeflow": {"release": "26.03", "components": "all"},
        "cluster": section,
    }


def write_environment(directory: Path, name: str, data: dict[str, Any]) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(clouds_file: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FAST_ENV)
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds_file)
    env.update(extra)
    return env
