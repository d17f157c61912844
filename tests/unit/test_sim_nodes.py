"""Simulated node descriptions and the Node objects/status built from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfdeploy.cli.sim import load_nodes
from kfdeploy.errors import ConfigError
from kfdeploy.sim.nodes import (
    CAPACITY_ANNOTATION,
    GPU_RESOURCE,
    SIM_LABEL,
    SimNode,
    default_nodes,
    node_object,
    node_status,
)


def test_gpu_node_object_and_status() -> None:
    node = SimNode(
        name="gpu-0",
        gpus=2,
        labels={"magnum.openstack.org/nodegroup": "gpu"},
        taints=({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"},),
    )
    node.validate()
    obj = node_object(node, 3)
    assert obj["metadata"]["labels"][SIM_LABEL] == "true"
    assert obj["metadata"]["labels"]["magnum.openstack.org/nodegroup"] == "gpu"
    assert obj["spec"]["taints"] == [
        {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
    ]
    assert json.loads(obj["metadata"]["annotations"][CAPACITY_ANNOTATION])[GPU_RESOURCE] == "2"
    obj["metadata"]["uid"] = "x"
    status = node_status(obj)
    assert status["capacity"][GPU_RESOURCE] == "2"
    assert status["allocatable"] == status["capacity"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    internal = next(a for a in status["addresses"] if a["type"] == "InternalIP")
    assert not internal["address"].startswith("127.")  # Endpoints refuse loopback IPs


def test_cpu_node_has_no_gpu_capacity() -> None:
    assert GPU_RESOURCE not in SimNode(name="cpu-0").capacity()


def test_transition_time_is_kept_across_heartbeats() -> None:
    obj = node_object(SimNode(name="n"), 0)
    first = node_status(obj)
    obj["status"] = {
        "conditions": [
            dict(c, lastTransitionTime="2020-01-01T00:00:00Z") for c in first["conditions"]
        ]
    }
    again = node_status(obj)
    assert all(c["lastTransitionTime"] == "2020-01-01T00:00:00Z" for c in again["conditions"])


@pytest.mark.parametrize(
    "node",
    [
        SimNode(name="Upper"),
        SimNode(name="ok", gpus=-1),
        SimNode(name="ok", taints=({"key": "k", "effect": "Sometimes"},)),
    ],
)
def test_invalid_nodes_are_rejected(node: SimNode) -> None:
    with pytest.raises(ConfigError):
        node.validate()


def test_default_nodes_include_a_tainted_gpu_node() -> None:
    nodes = default_nodes()
    gpu = [n for n in nodes if n.gpus]
    assert gpu and all(n.taints for n in gpu)
    assert all("magnum.openstack.org/role" in n.labels for n in nodes)


def test_load_nodes_file(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(
        "nodes:\n"
        "- name: a\n  cpu: '4'\n  memory: 16Gi\n"
        "- name: g\n  gpus: 8\n"
        "  taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]\n"
    )
    nodes = load_nodes(path)
    assert [n.name for n in nodes] == ["a", "g"]
    assert nodes[1].gpus == 8 and nodes[1].taints[0]["effect"] == "NoSchedule"
    assert SimNode.from_dict(nodes[1].to_dict()).to_dict() == nodes[1].to_dict()


def test_load_nodes_rejects_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text("- name: a\n  gpu: 1\n")
    with pytest.raises(ConfigError, match="unknown simulated node fields: gpu"):
        load_nodes(path)
