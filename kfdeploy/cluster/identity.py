"""Read and record which environment owns a cluster (for the context guard in kfdeploy.plan.guard)."""

from __future__ import annotations

import datetime as dt
import json

from kfdeploy import __version__
from kfdeploy.cluster.client import Kube
from kfdeploy.plan.guard import OWNER_CONFIGMAP, OWNER_NAMESPACE, SIMULATED_LABEL, ClusterIdentity

_CM_PATH = f"/api/v1/namespaces/{OWNER_NAMESPACE}/configmaps/{OWNER_CONFIGMAP}"


def read_identity(kube: Kube) -> ClusterIdentity:
    cm = kube.get_or_none(_CM_PATH)
    data = (cm or {}).get("data") or {}
    nodes = kube.get("/api/v1/nodes", query=[("labelSelector", SIMULATED_LABEL), ("limit", "1")])
    return ClusterIdentity(
        api_server=kube.host,
        owner=data.get("environment"),
        simulated=bool(nodes.get("items")),
        magnum_cluster=data.get("magnum-cluster"),
    )


def claim(kube: Kube, owner: str, *, magnum_cluster: str | None = None) -> None:
    """Record `owner` on the cluster (server-side apply, so a re-claim by the same owner is a no-op)."""
    existing = kube.get_or_none(_CM_PATH)
    claimed_at = ((existing or {}).get("data") or {}).get("claimed-at") or dt.datetime.now(
        dt.UTC
    ).isoformat(timespec="seconds")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": OWNER_CONFIGMAP,
            "namespace": OWNER_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "kfdeploy"},
        },
        "data": {
            "environment": owner,
            "claimed-at": claimed_at,
            "tool": f"kfdeploy/{__version__}",
            **({"magnum-cluster": magnum_cluster} if magnum_cluster else {}),
        },
    }
    kube.request(
        "PATCH",
        _CM_PATH,
        query=[("fieldManager", "kfdeploy"), ("force", "true")],
        body=json.dumps(body),
        content_type="application/apply-patch+yaml",
        what=f"ConfigMap {OWNER_NAMESPACE}/{OWNER_CONFIGMAP}",
    )


def release_claim(kube: Kube) -> None:
    kube.request("DELETE", _CM_PATH, what=f"ConfigMap {OWNER_NAMESPACE}/{OWNER_CONFIGMAP}")
