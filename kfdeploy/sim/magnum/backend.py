"""What stands behind an emulated Magnum cluster: a real local control plane, or only a CA.

Node labels and taints: Magnum below 1.14 has no `node_labels`/`node_taints`. On real Magnum
(Fedora CoreOS driver) the way to label and taint a nodegroup's nodes is the `kubelet_options`
label, whose value is appended to the kubelet's command line, so `--node-labels=...` and
`--register-with-taints=...` reach the nodes. The emulator honours exactly that, and with
microversion 1.14 or later also the nodegroup fields `node_labels` and `node_taints`.
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from kfdeploy.sim.magnum.config import Flavor
from kfdeploy.sim.nodes import SimNode
from kfdeploy.sim.pki import ClusterPKI

log = logging.getLogger(__name__)

MAGNUM_LABEL = "magnum.openstack.org"


def parse_kubelet_options(options: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(node labels, taints) that `--node-labels` / `--register-with-taints` would register."""
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    try:
        words = shlex.split(options)
    except ValueError:
        return labels, taints
    for i, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if not eq and i + 1 < len(words):
            value = words[i + 1]
        if flag == "--node-labels":
            for item in filter(None, value.split(",")):
                k, _, v = item.partition("=")
                labels[k] = v
        elif flag == "--register-with-taints":
            for item in filter(None, value.split(",")):
                kv, _, effect = item.rpartition(":")
                k, _, v = kv.partition("=")
                taints.append({"key": k, "value": v, "effect": effect})
    return labels, taints


def node_names(
    cluster_name: str, suffix: str, nodegroup: Mapping[str, Any], count: int
) -> list[str]:
    """Server names the way Magnum's Heat templates name them (shortened to fit 63 chars)."""
    base = cluster_name[:30].rstrip("-")
    if nodegroup["name"] == "default-master":
        stem = f"{base}-{suffix}-master"
    elif nodegroup["name"] == "default-worker":
        stem = f"{base}-{suffix}-node"
    else:
        stem = f"{base}-{nodegroup['name'][:20].rstrip('-')}-{suffix}-node"
    return [f"{stem}-{i}".lower() for i in range(count)]


def sim_nodes(
    nodegroups: Sequence[Mapping[str, Any]], flavors: Mapping[str, Flavor], node_api: bool
) -> list[SimNode]:
    """The simulated nodes of a cluster: one per server of each nodegroup in a live state."""
    nodes: list[SimNode] = []
    for ng in nodegroups:
        if ng["status"] in ("CREATE_FAILED", "DELETE_IN_PROGRESS", "DELETE_COMPLETE"):
            continue
        flavor = flavors[ng["flavor_id"]]
        labels = {
            f"{MAGNUM_LABEL}/nodegroup": ng["name"],
            f"{MAGNUM_LABEL}/role": ng["role"],
            "node.kubernetes.io/instance-type": ng["flavor_id"],
        }
        taints: list[dict[str, str]] = []
        extra_labels, extra_taints = parse_kubelet_options(
            str((ng.get("labels") or {}).get("kubelet_options", ""))
        )
        labels.update(extra_labels)
        taints.extend(extra_taints)
        if node_api:
            labels.update(ng.get("node_labels") or {})
            taints.extend(ng.get("node_taints") or [])
        if ng["role"] == "master":
            labels["node-role.kubernetes.io/control-plane"] = ""
            taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
        for name in ng["servers"]:
            nodes.append(
                SimNode(
                    name=name,
                    cpu=str(flavor.vcpus),
                    memory=flavor.memory(),
                    gpus=flavor.gpus,
                    labels=dict(labels),
                    taints=tuple(taints),
                )
            )
    return nodes


class Backend(Protocol):
    def provision(self, key: str, name: str, nodes: Sequence[SimNode]) -> str:
        """Bring the cluster up with `nodes`; return its API address."""

    def set_nodes(self, key: str, nodes: Sequence[SimNode]) -> None: ...

    def destroy(self, key: str) -> None: ...

    def ca_pem(self, key: str) -> bytes: ...

    def sign_csr(self, key: str, csr_pem: bytes) -> bytes: ...

    def revive(self, key: str, name: str, nodes: Sequence[SimNode]) -> str | None:
        """After an emulator restart: make sure the cluster runs again; its API address."""


class LocalBackend:
    """Each cluster is a real `LocalCluster` under `<root>/<uuid>`."""

    def __init__(self, root: Path, start_timeout: float = 300) -> None:
        self.root = root
        self.start_timeout = start_timeout
        # Starting control planes concurrently on a 2-core machine only makes each slower and
        # risks timeouts; one at a time.
        self._start_lock = threading.Lock()

    def _cluster(self, key: str, name: str = "magnum") -> Any:
        from kfdeploy.sim.cluster import LocalCluster

        return LocalCluster(self.root / key, name=name)

    def provision(self, key: str, name: str, nodes: Sequence[SimNode]) -> str:
        cluster = self._cluster(key, name)
        with self._start_lock:
            cluster.start(nodes, timeout=self.start_timeout)
        return str(cluster.api_url)

    def set_nodes(self, key: str, nodes: Sequence[SimNode]) -> None:
        self._cluster(key).set_nodes(nodes)

    def destroy(self, key: str) -> None:
        self._cluster(key).destroy()

    def ca_pem(self, key: str) -> bytes:
        return bytes(self._cluster(key).ca_cert_pem)

    def sign_csr(self, key: str, csr_pem: bytes) -> bytes:
        return bytes(self._cluster(key).sign_client_csr(csr_pem))

    def revive(self, key: str, name: str, nodes: Sequence[SimNode]) -> str | None:
        if not (self.root / key).exists():
            return None
        return self.provision(key, name, nodes)


class FakeBackend:
    """No processes: a CA per cluster so certificates work, and an API address nobody serves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, list[SimNode]] = {}

    def provision(self, key: str, name: str, nodes: Sequence[SimNode]) -> str:
        ClusterPKI(self.root / key / "pki").ensure()
        self.nodes[key] = list(nodes)
        return "https://127.0.0.1:9"  # discard port: nothing answers, by design

    def set_nodes(self, key: str, nodes: Sequence[SimNode]) -> None:
        self.nodes[key] = list(nodes)

    def destroy(self, key: str) -> None:
        import shutil

        self.nodes.pop(key, None)
        shutil.rmtree(self.root / key, ignore_errors=True)

    def ca_pem(self, key: str) -> bytes:
        return ClusterPKI(self.root / key / "pki").ca_cert_pem

    def sign_csr(self, key: str, csr_pem: bytes) -> bytes:
        return ClusterPKI(self.root / key / "pki").sign_csr(csr_pem)

    def revive(self, key: str, name: str, nodes: Sequence[SimNode]) -> str | None:
        return self.provision(key, name, nodes) if (self.root / key).exists() else None
