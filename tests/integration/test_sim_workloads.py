"""Real Kubernetes behaviour on the simulated cluster: the things kfdeploy relies on."""

from __future__ import annotations

import time
from typing import Any

import pytest
from crd_support import open_crd
from kubernetes import client as k8s

from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.sim.testing import GPU_TAINT, wait_for

pytestmark = pytest.mark.integration

PAUSE = "registry.k8s.io/pause:3.10"  # never pulled: no container runs on a simulated node


def _labels(name: str) -> dict[str, str]:
    return {"app": name}


def _pod_spec(
    resources: dict[str, Any] | None = None, tolerations: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {
        "containers": [{"name": "main", "image": PAUSE, "resources": resources or {}}],
        "tolerations": tolerations or [],
    }


def _deployment(name: str, pod_spec: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _labels(name)},
            "template": {"metadata": {"labels": _labels(name)}, "spec": pod_spec},
        },
    }


def _condition(obj: Any, ctype: str) -> Any:
    for cond in (obj.status.conditions or []) if obj.status else []:
        if cond.type == ctype:
            return cond
    return None


def test_nodes_are_ready_with_gpu_capacity_and_renewed_leases(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert {"sim-cpu-0", "sim-cpu-1", "sim-gpu-0"} <= set(nodes)
    for node in nodes.values():
        assert _condition(node, "Ready").status == "True"
    gpu = nodes["sim-gpu-0"]
    assert gpu.status.allocatable["nvidia.com/gpu"] == "2"
    assert gpu.metadata.labels["magnum.openstack.org/nodegroup"] == "gpu"
    assert any(t.key == GPU_TAINT["key"] and t.effect == "NoSchedule" for t in gpu.spec.taints)
    leases = k8s.CoordinationV1Api(api)
    first = leases.read_namespaced_lease("sim-gpu-0", "kube-node-lease").spec.renew_time
    wait_for(
        "the node lease to be renewed",
        lambda: (
            leases.read_namespaced_lease("sim-gpu-0", "kube-node-lease").spec.renew_time > first
        ),
        timeout=30,
    )


def test_crd_becomes_established(api: k8s.ApiClient) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    name = f"widgets{int(time.time() * 1000) % 100000}.sim.kfdeploy.dev"
    plural = name.split(".")[0]
    crd = open_crd("sim.kfdeploy.dev", plural, plural.capitalize()[:-1])
    ext.create_custom_resource_definition(crd)
    try:
        wait_for(
            f"CRD {name} Established",
            lambda: (
                (c := _condition(ext.read_custom_resource_definition(name), "Established"))
                and c.status == "True"
            ),
            timeout=30,
        )
    finally:
        ext.delete_custom_resource_definition(name)


def test_gpu_deployment_lands_on_gpu_node_and_becomes_available(
    api: k8s.ApiClient, namespace: str
) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    spec = _pod_spec(
        resources={"limits": {"nvidia.com/gpu": "1"}},
        tolerations=[{"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
    )
    apps.create_namespaced_deployment(namespace, _deployment("trainer", spec))
    wait_for(
        "Deployment trainer Available",
        lambda: (
            (c := _condition(apps.read_namespaced_deployment("trainer", namespace), "Available"))
            and c.status == "True"
        ),
        timeout=60,
    )
    [pod] = core.list_namespaced_pod(namespace, label_selector="app=trainer").items
    assert pod.spec.node_name == "sim-gpu-0"
    assert pod.status.phase == "Running" and pod.status.pod_ip


def test_deployment_wanting_more_gpus_than_exist_stays_pending_with_reason(
    api: k8s.ApiClient, namespace: str
) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    spec = _pod_spec(
        resources={"limits": {"nvidia.com/gpu": "8"}},
        tolerations=[{"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
    )
    apps.create_namespaced_deployment(namespace, _deployment("greedy", spec))

    def unschedulable() -> Any:
        pods = core.list_namespaced_pod(namespace, label_selector="app=greedy").items
        if not pods:
            return None
        cond = _condition(pods[0], "PodScheduled")
        return cond if cond and cond.status == "False" and cond.reason == "Unschedulable" else None

    cond = wait_for("PodScheduled=False from the scheduler", unschedulable, timeout=60)
    assert (
        "nvidia.com/gpu" in cond.message
    )  # e.g. "0/3 nodes are available: 1 Insufficient nvidia.com/gpu ..."
    events = wait_for(
        "a FailedScheduling event",
        lambda: [
            e for e in core.list_namespaced_event(namespace).items if e.reason == "FailedScheduling"
        ],
        timeout=30,
    )
    assert "Insufficient nvidia.com/gpu" in events[0].message
    pods = core.list_namespaced_pod(namespace, label_selector="app=greedy").items
    assert all(p.status.phase == "Pending" and not p.spec.node_name for p in pods)


def test_statefulset_with_volume_claims_becomes_ready(api: k8s.ApiClient, namespace: str) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 2,
            "selector": {"matchLabels": _labels("db")},
            "template": {
                "metadata": {"labels": _labels("db")},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": PAUSE,
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ]
                },
            },
            # Claims of the default StorageClass: bound by the simulator's provisioner.
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    apps.create_namespaced_stateful_set(namespace, sts)
    wait_for(
        "StatefulSet db ready 2/2",
        lambda: (
            (s := apps.read_namespaced_stateful_set("db", namespace).status)
            and s.ready_replicas == 2
        ),
        timeout=90,
    )
    claims = core.list_namespaced_persistent_volume_claim(namespace).items
    assert len(claims) == 2 and all(c.status.phase == "Bound" for c in claims)


def test_daemonset_becomes_ready_on_untainted_nodes(api: k8s.ApiClient, namespace: str) -> None:
    apps = k8s.AppsV1Api(api)
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": _labels("agent")},
            "template": {"metadata": {"labels": _labels("agent")}, "spec": _pod_spec()},
        },
    }
    apps.create_namespaced_daemon_set(namespace, ds)

    def ready() -> bool:
        s = apps.read_namespaced_daemon_set("agent", namespace).status
        return bool(s.desired_number_scheduled) and s.number_ready == s.desired_number_scheduled

    wait_for("DaemonSet agent ready", ready, timeout=60)
    # NoSchedule taints (the GPU node's) keep an untolerating DaemonSet off those nodes.
    untainted = [
        n
        for n in k8s.CoreV1Api(api).list_node().items
        if not any(t.effect in ("NoSchedule", "NoExecute") for t in n.spec.taints or [])
    ]
    status = apps.read_namespaced_daemon_set("agent", namespace).status
    assert status.desired_number_scheduled == len(untainted) >= 2


def test_job_completes(api: k8s.ApiClient, namespace: str) -> None:
    batch = k8s.BatchV1Api(api)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "completions": 2,
            "backoffLimit": 0,
            "template": {"spec": {**_pod_spec(), "restartPolicy": "Never"}},
        },
    }
    batch.create_namespaced_job(namespace, job)
    wait_for(
        "Job once Complete",
        lambda: (
            (c := _condition(batch.read_namespaced_job("once", namespace), "Complete"))
            and c.status == "True"
        ),
        timeout=60,
    )
    assert batch.read_namespaced_job("once", namespace).status.succeeded == 2


def test_deleting_a_namespace_finishes(api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    name = f"t-doomed-{int(time.time() * 1000) % 100000}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    wait_for(
        "default ServiceAccount", lambda: core.read_namespaced_service_account("default", name), 30
    )
    apps.create_namespaced_deployment(name, _deployment("web", _pod_spec(), replicas=2))
    wait_for(
        "web pods running",
        lambda: (
            len([p for p in core.list_namespaced_pod(name).items if p.status.phase == "Running"])
            == 2
        ),
        timeout=60,
    )
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except k8s.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(f"namespace {name} to be finalized", gone, timeout=90)


def test_server_side_apply_conflict_is_409(
    api: k8s.ApiClient, namespace: str, sim_cluster: LocalCluster
) -> None:
    client = sim_cluster.client()
    path = f"/api/v1/namespaces/{namespace}/configmaps/shared"
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shared"},
        "data": {"key": "from-a"},
    }
    client.apply(path, cm, field_manager="manager-a", force=False)
    from kfdeploy.sim.kube import KubeApiError

    with pytest.raises(KubeApiError) as err:
        client.apply(
            path, {**cm, "data": {"key": "from-b"}}, field_manager="manager-b", force=False
        )
    assert err.value.status == 409
    assert err.value.body.get("reason") == "Conflict"
    assert "manager-a" in str(err.value)
    # With force the second manager takes the field over, as kfdeploy's apply does on purpose.
    client.apply(path, {**cm, "data": {"key": "from-b"}}, field_manager="manager-b", force=True)
    assert k8s.CoreV1Api(api).read_namespaced_config_map("shared", namespace).data == {
        "key": "from-b"
    }


def test_deleted_pods_go_away(api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(api)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo"}, "spec": _pod_spec()}
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        "pod solo Running",
        lambda: core.read_namespaced_pod("solo", namespace).status.phase == "Running",
        60,
    )
    core.delete_namespaced_pod(
        "solo", namespace
    )  # default 30 s grace: the fake kubelet confirms at once

    def gone() -> bool:
        try:
            core.read_namespaced_pod("solo", namespace)
        except k8s.ApiException as exc:
            return exc.status == 404
        return False

    wait_for("pod solo deleted", gone, timeout=20)
