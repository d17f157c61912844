"""Simulated nodes: their description, their Node objects and the status a kubelet would post.

A node's capacity is kept in an annotation on the Node itself, so the fake kubelet (a separate
process) can rebuild the full status after any restart from the API server alone, and the Node
object is the single record of what was registered.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kfdeploy.errors import ConfigError

SIM_LABEL = "sim.kfdeploy.dev/simulated"
CAPACITY_ANNOTATION = "sim.kfdeploy.dev/capacity"
INDEX_ANNOTATION = "sim.kfdeploy.dev/index"
GPU_RESOURCE = "nvidia.com/gpu"
KUBELET_VERSION = "v1.36.3"
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class SimNode:
    """One simulated node; capacity quantities are Kubernetes quantity strings."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0
    pods: int = 110
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()

    def validate(self) -> None:
        if (
            not self.name
            or len(self.name) > 63
            or not self.name.replace("-", "").replace(".", "").isalnum()
        ):
            raise ConfigError(f"invalid simulated node name {self.name!r}")
        if self.name != self.name.lower():
            raise ConfigError(f"simulated node name {self.name!r} must be lower case")
        if self.gpus < 0 or self.pods <= 0:
            raise ConfigError(f"node {self.name}: gpus must be >= 0 and pods > 0")
        for taint in self.taints:
            if "key" not in taint or taint.get("effect") not in _TAINT_EFFECTS:
                raise ConfigError(
                    f"node {self.name}: taint {dict(taint)} needs a key and an effect "
                    f"in {_TAINT_EFFECTS}"
                )

    def capacity(self) -> dict[str, str]:
        cap = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": "100Gi",
        }
        if self.gpus:
            cap[GPU_RESOURCE] = str(self.gpus)
        return cap

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cpu": self.cpu,
            "memory": self.memory,
            "gpus": self.gpus,
            "pods": self.pods,
            "labels": dict(self.labels),
            "taints": [dict(t) for t in self.taints],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimNode:
        known = {"name", "cpu", "memory", "gpus", "pods", "labels", "taints"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown simulated node fields: {', '.join(sorted(unknown))}")
        node = cls(
            name=str(data["name"]),
            cpu=str(data.get("cpu", "8")),
            memory=str(data.get("memory", "32Gi")),
            gpus=int(data.get("gpus", 0)),
            pods=int(data.get("pods", 110)),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            taints=tuple(
                {str(k): str(v) for k, v in t.items()} for t in (data.get("taints") or ())
            ),
        )
        node.validate()
        return node


def default_nodes() -> list[SimNode]:
    """The node list of `kfdeploy sim start` without --nodes: two CPU workers and one GPU worker.

    Labels mirror what Magnum puts on its nodes so placement rules written for Magnum work here.
    """
    magnum = "magnum.openstack.org"
    return [
        SimNode(
            name=f"sim-worker-{i}",
            labels={f"{magnum}/nodegroup": "default-worker", f"{magnum}/role": "worker"},
        )
        for i in range(2)
    ] + [
        SimNode(
            name="sim-gpu-0",
            gpus=4,
            labels={
                f"{magnum}/nodegroup": "gpu",
                f"{magnum}/role": "worker",
                "nvidia.com/gpu.present": "true",
            },
            taints=({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"},),
        )
    ]


def node_ip(index: int) -> str:
    # Documentation-free private addresses: pure data, never dialled (see docs/sim.md).
    return f"10.255.{index // 250}.{index % 250 + 1}"


def pod_cidr(index: int) -> str:
    return f"10.244.{index}.0/24"


def node_object(node: SimNode, index: int) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        SIM_LABEL: "true",
        **dict(node.labels),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                CAPACITY_ANNOTATION: json.dumps(node.capacity(), sort_keys=True),
                INDEX_ANNOTATION: str(index),
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {
            "podCIDR": pod_cidr(index),
            "podCIDRs": [pod_cidr(index)],
            "taints": [
                {k: v for k, v in t.items() if k in ("key", "value", "effect")} for t in node.taints
            ],
        },
    }


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_status(node_obj: Mapping[str, Any]) -> dict[str, Any]:
    """The status a healthy kubelet would post for `node_obj` (a Node read from the API)."""
    meta = node_obj["metadata"]
    annotations = meta.get("annotations") or {}
    capacity = json.loads(annotations.get(CAPACITY_ANNOTATION, "{}"))
    index = int(annotations.get(INDEX_ANNOTATION, "0"))
    now = now_rfc3339()

    def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": _transition_time(node_obj, ctype, status, now),
        }

    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "simulated"),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "kfdeploy simulated kubelet is posting ready status",
            ),
        ],
        "addresses": [
            {"type": "InternalIP", "address": node_ip(index)},
            {"type": "Hostname", "address": meta["name"]},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": f"kfdeploy-sim-{index}",
            "systemUUID": f"kfdeploy-sim-{index}",
            "bootID": f"kfdeploy-sim-{index}",
            "kernelVersion": "simulated",
            "osImage": "kfdeploy simulated node",
            "containerRuntimeVersion": "kfdeploy-sim://1.0",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def _transition_time(node_obj: Mapping[str, Any], ctype: str, status: str, now: str) -> str:
    for c in (node_obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == status and c.get("lastTransitionTime"):
            return str(c["lastTransitionTime"])
    return now
