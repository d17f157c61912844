"""The checks' rules on plain dicts and a fake cluster: what counts as ready, what is reported."""

from __future__ import annotations

import time
from typing import Any

import pytest
from checks_fakes import FakeKube, magnum_cluster, make_env, rendered

from kfdeploy.checks import run_checks
from kfdeploy.checks.framework import Status
from kfdeploy.checks.kube import path_of
from kfdeploy.checks.platform import (
    crd_problem,
    endpoints_ready,
    label_selector,
    pod_problems,
    workload_problem,
)
from kfdeploy.checks.probes import (
    gpu_nodegroups,
    gpu_pod,
    gpu_tolerations,
    judge_gpu_node,
    owner_bindings,
    profile_version,
)


def _deploy(
    replicas: int = 1, available: int = 1, cond: str = "True", **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "d", "generation": 2},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "d"}}},
        "status": {
            "observedGeneration": 2,
            "availableReplicas": available,
            "conditions": [
                {
                    "type": "Available",
                    "status": cond,
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                }
            ],
            **status,
        },
    }


# ---- pure rules ---------------------------------------------------------------------------------


def test_deployment_rules() -> None:
    assert workload_problem("Deployment", _deploy()) is None
    assert workload_problem("Deployment", None) == "not found in the cluster"
    assert workload_problem("Deployment", _deploy(replicas=0, available=0, cond="False")) is None
    problem = workload_problem("Deployment", _deploy(replicas=2, available=0, cond="False"))
    assert problem is not None
    assert "Available=False (MinimumReplicasUnavailable)" in problem
    assert "0/2 replicas available" in problem
    stale = _deploy()
    stale["status"]["observedGeneration"] = 1
    assert (
        workload_problem("Deployment", stale) == "the controller has not yet seen its latest spec"
    )
    refused = _deploy(available=0, cond="False")
    refused["status"]["conditions"].append(
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": "forbidden: quota",
        }
    )
    assert "ReplicaFailure=True (FailedCreate): forbidden: quota" in (
        workload_problem("Deployment", refused) or ""
    )


def test_statefulset_and_daemonset_rules() -> None:
    sts = {"metadata": {}, "spec": {"replicas": 2}, "status": {"readyReplicas": 1}}
    assert workload_problem("StatefulSet", sts) == "1/2 replicas ready"
    sts["status"]["readyReplicas"] = 2
    assert workload_problem("StatefulSet", sts) is None
    ds = {
        "metadata": {},
        "status": {"desiredNumberScheduled": 3, "numberReady": 3, "updatedNumberScheduled": 2},
    }
    assert workload_problem("DaemonSet", ds) == "3/3 pods ready, 2/3 updated"
    ds["status"]["updatedNumberScheduled"] = 3
    assert workload_problem("DaemonSet", ds) is None


def test_label_selector() -> None:
    assert label_selector({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert (
        label_selector(
            {
                "matchExpressions": [
                    {"key": "x", "operator": "In", "values": ["p", "q"]},
                    {"key": "y", "operator": "NotIn", "values": ["r"]},
                    {"key": "z", "operator": "Exists"},
                    {"key": "w", "operator": "DoesNotExist"},
                ]
            }
        )
        == "x in (p,q),y notin (r),z,!w"
    )
    assert label_selector(None) == ""


def test_pod_problems_quote_the_scheduler_and_the_kubelet() -> None:
    pods = [
        {
            "metadata": {"name": "ok"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        {
            "metadata": {"name": "pending"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    }
                ],
            },
        },
        {
            "metadata": {"name": "crash"},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "app",
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    }
                ],
            },
        },
    ]
    assert pod_problems(pods) == [
        "pod pending Pending: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
        "pod crash Running, not Ready: container app CrashLoopBackOff: back-off",
    ]
    assert len(pod_problems([pods[1]] * 10)) == 3


def test_crd_rules() -> None:
    ok = {
        "status": {
            "conditions": [
                {"type": "Established", "status": "True"},
                {"type": "NamesAccepted", "status": "True"},
            ]
        }
    }
    assert crd_problem(ok) is None
    assert crd_problem(None) == "not found in the cluster"
    clash = {
        "status": {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "False",
                    "reason": "NameConflict",
                    "message": "plural is already in use",
                }
            ]
        }
    }
    assert crd_problem(clash) == (
        "no Established condition yet; NamesAccepted=False (NameConflict): plural is already in use"
    )


def test_endpoints_ready_counts_ready_addresses() -> None:
    slices = [
        {
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.3"]},  # no conditions: ready by the API's definition
            ]
        }
    ]
    assert endpoints_ready(slices) == 2
    assert endpoints_ready([]) == 0


def test_gpu_tolerations_and_pod() -> None:
    env = make_env(
        cluster=magnum_cluster(
            [
                {
                    "name": "gpu-a",
                    "flavor": "g",
                    "count": 1,
                    "gpus": 2,
                    "taints": [
                        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
                    ],
                },
                {
                    "name": "gpu-b",
                    "flavor": "g",
                    "count": 1,
                    "gpus": 1,
                    "taints": [{"key": "dedicated", "effect": "NoExecute"}],
                },
                {"name": "cpu", "flavor": "c", "count": 1},
            ]
        )
    )
    assert [g.name for g in gpu_nodegroups(env)] == ["gpu-a", "gpu-b"]
    assert gpu_tolerations(env) == [
        {"key": "nvidia.com/gpu", "effect": "NoSchedule", "operator": "Equal", "value": "present"},
        {"key": "dedicated", "effect": "NoExecute", "operator": "Exists"},
    ]
    pod = gpu_pod(env, active_deadline=60)
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert pod["spec"]["activeDeadlineSeconds"] == 60


def _node(name: str, labels: dict[str, str], gpus: str | None = None) -> dict[str, Any]:
    cap = {"cpu": "8"} | ({"nvidia.com/gpu": gpus} if gpus else {})
    return {"metadata": {"name": name, "labels": labels}, "status": {"capacity": cap}}


def test_gpu_node_judgement_by_provider() -> None:
    magnum = make_env(
        cluster=magnum_cluster([{"name": "gpu", "flavor": "g", "count": 1, "gpus": 2}])
    )
    ng = "magnum.openstack.org/nodegroup"
    assert judge_gpu_node(magnum, _node("n1", {ng: "gpu"})).status == Status.passed
    wrong = judge_gpu_node(magnum, _node("n2", {ng: "default-worker"}, gpus="1"))
    assert wrong.status == Status.failed
    assert "nodegroup default-worker is not a GPU nodegroup (gpu)" in wrong.reason

    existing = make_env(
        cluster={"nodegroups": [{"name": "gpu", "flavor": "g", "count": 1, "gpus": 2}]}
    )
    assert judge_gpu_node(existing, _node("n3", {}, gpus="4")).status == Status.passed
    assert judge_gpu_node(existing, _node("n4", {})).status == Status.failed


def test_profile_helpers() -> None:
    crd = {"spec": {"versions": [{"name": "v1beta1"}, {"name": "v1", "storage": True}]}}
    assert profile_version(crd) == "v1"
    bindings = [
        {
            "metadata": {"name": "namespaceAdmin"},
            "subjects": [{"kind": "User", "name": "me@cern.ch"}],
        },
        {
            "metadata": {"name": "default-editor"},
            "subjects": [{"kind": "ServiceAccount", "name": "me@cern.ch"}],
        },
    ]
    assert owner_bindings(bindings, "me@cern.ch") == ["namespaceAdmin"]


# ---- checks against a fake cluster ---------------------------------------------------------------


def _only(name: str, objects: list[Any], kube: FakeKube, timeout: float = 0.3, **env: Any) -> Any:
    (result,) = run_checks(
        make_env(**env), None, objects, kube=kube, only=[name], timeout=timeout
    ).results
    return result


def test_workloads_available_names_what_is_missing_and_why() -> None:
    objs = [
        rendered("Deployment", "good", "kubeflow"),
        rendered("Deployment", "bad", "kubeflow"),
        rendered("StatefulSet", "gone", "kubeflow", component="katib"),
    ]
    kube = FakeKube(
        {
            path_of("apps/v1", "deployments", "good", "kubeflow"): {
                **_deploy(),
                "metadata": {"name": "good", "namespace": "kubeflow"},
            },
            path_of("apps/v1", "deployments", "bad", "kubeflow"): {
                **_deploy(available=0, cond="False"),
                "metadata": {"name": "bad", "namespace": "kubeflow"},
            },
            path_of("v1", "pods", "bad-1", "kubeflow"): {
                "metadata": {"name": "bad-1", "labels": {"app": "d"}},
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/3 nodes are available",
                        }
                    ],
                },
            },
        }
    )
    result = _only("workloads-available", objs, kube)
    assert result.status == Status.failed
    assert result.reason.startswith(
        "2 of 3 workloads not ready: Deployment kubeflow/bad, StatefulSet"
    )
    assert result.details == (
        "Deployment kubeflow/bad (test): Available=False (MinimumReplicasUnavailable): Deployment does "
        "not have minimum availability.; 0/1 replicas available",
        "  pod bad-1 Pending: Unschedulable: 0/3 nodes are available",
        "StatefulSet kubeflow/gone (katib): not found in the cluster",
    )


def test_crds_established_rereads_only_pending_crds() -> None:
    objs = [
        rendered("CustomResourceDefinition", n, api_version="apiextensions.k8s.io/v1")
        for n in ("a.x", "b.x")
    ]
    ok = {
        "status": {
            "conditions": [
                {"type": "Established", "status": "True"},
                {"type": "NamesAccepted", "status": "True"},
            ]
        }
    }
    kube = FakeKube({path_of("apiextensions.k8s.io/v1", "customresourcedefinitions", "a.x"): ok})
    result = _only("crds-established", objs, kube)
    assert result.status == Status.failed
    assert result.details == ("CustomResourceDefinition b.x: not found in the cluster",)
    reads = [p for m, p in kube.calls if p.endswith("/a.x")]
    assert len(reads) == 1  # established once, never read again


def _webhook_objects() -> list[Any]:
    return [
        rendered(
            "ValidatingWebhookConfiguration", "hooks", api_version="admissionregistration.k8s.io/v1"
        )
    ]


def _webhook_live(ca: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "hooks"},
        "webhooks": [
            {
                "name": "v.example.org",
                "clientConfig": {
                    "caBundle": ca,
                    "service": {"namespace": "kubeflow", "name": "hook-svc"},
                },
            }
        ],
    }


def test_webhooks_ready_requires_ca_bundle_and_ready_endpoints() -> None:
    hooks = path_of("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", "hooks")
    svc = path_of("v1", "services", "hook-svc", "kubeflow")
    slice_path = path_of("discovery.k8s.io/v1", "endpointslices", "hook-svc-abc", "kubeflow")
    kube = FakeKube({hooks: _webhook_live(""), svc: {"metadata": {"name": "hook-svc"}}})
    result = _only("webhooks-ready", _webhook_objects(), kube)
    assert result.status == Status.failed
    assert result.details == (
        "ValidatingWebhookConfiguration hooks webhook v.example.org: caBundle is empty (CA not injected)",
        "ValidatingWebhookConfiguration hooks webhook v.example.org: service kubeflow/hook-svc has no "
        "ready endpoints",
    )
    kube.objects[hooks] = _webhook_live("Q0EK")
    kube.objects[slice_path] = {
        "metadata": {"labels": {"kubernetes.io/service-name": "hook-svc"}},
        "endpoints": [{"addresses": ["10.1.1.1"]}],
    }
    assert _only("webhooks-ready", _webhook_objects(), kube).status == Status.passed


def test_webhooks_not_applicable_when_the_sim_overlay_removed_them() -> None:
    result = _only("webhooks-ready", [], FakeKube(), simulated=True, overlays={"sim": {}})
    assert result.status == Status.not_applicable
    assert "sim overlay removes webhooks" in result.reason
    assert _only("webhooks-ready", [], FakeKube()).reason == (
        "no webhook configuration or conversion webhook was rendered"
    )


def test_webhooks_on_a_simulated_cluster_are_looked_at_once_and_not_failed() -> None:
    kube = FakeKube(
        {
            path_of(
                "admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", "hooks"
            ): _webhook_live("")
        }
    )
    result = _only("webhooks-ready", _webhook_objects(), kube, simulated=True)
    assert result.status == Status.not_applicable
    assert "simulated cluster" in result.reason
    assert len([c for c in kube.calls if "webhookconfigurations" in c[1]]) == 1


def test_conversion_webhooks_are_checked() -> None:
    crd = rendered(
        "CustomResourceDefinition",
        "jobsets.x",
        api_version="apiextensions.k8s.io/v1",
        spec={"conversion": {"strategy": "Webhook"}},
    )
    live = {
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"service": {"namespace": "kubeflow", "name": "jobset-webhook"}}
                },
            }
        }
    }
    kube = FakeKube(
        {path_of("apiextensions.k8s.io/v1", "customresourcedefinitions", "jobsets.x"): live}
    )
    result = _only("webhooks-ready", [crd], kube)
    assert result.status == Status.failed
    assert result.details[0] == (
        "CustomResourceDefinition jobsets.x conversion webhook: caBundle is empty (CA not injected)"
    )


def test_gpu_schedules_not_applicable_without_gpu_nodegroups() -> None:
    result = _only("gpu-schedules", [], FakeKube())
    assert result.status == Status.not_applicable
    assert "no GPU nodegroup" in result.reason


class SchedulingKube(FakeKube):
    """Binds every created pod to `node` on the first read, as a scheduler would."""

    def __init__(self, node: dict[str, Any] | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.node = node
        if node:
            self.objects[path_of("v1", "nodes", node["metadata"]["name"])] = node

    def get(self, path: str, query: Any = None) -> Any:
        obj = self.objects.get(path)
        if obj is not None and obj.get("kind") == "Pod" and self.node:
            obj["spec"]["nodeName"] = self.node["metadata"]["name"]
        return super().get(path, query)


def test_gpu_schedules_passes_and_always_deletes_its_pod() -> None:
    cluster = {"nodegroups": [{"name": "gpu", "flavor": "g", "count": 1, "gpus": 2}]}
    kube = SchedulingKube(_node("gpu-0", {}, gpus="2"))
    result = _only("gpu-schedules", [], kube, cluster=cluster)
    assert result.status == Status.passed, result
    assert result.reason == "scheduled onto gpu-0 (2 x nvidia.com/gpu)"
    assert not [p for p in kube.objects if "/pods/" in p]
    assert ("POST", "/api/v1/namespaces") in kube.calls  # namespace made on first use

    stuck = SchedulingKube(None)
    result = _only("gpu-schedules", [], stuck, cluster=cluster)
    assert result.status == Status.failed
    assert result.reason == "not scheduled yet (after 0.3s)"
    assert not [p for p in stuck.objects if "/pods/" in p]


def test_gpu_schedules_retries_while_the_namespace_is_not_ready() -> None:
    from kfdeploy.errors import ClusterError

    cluster = {"nodegroups": [{"name": "gpu", "flavor": "g", "count": 1, "gpus": 2}]}
    kube = SchedulingKube(_node("gpu-0", {}, gpus="2"))
    kube.errors[path_of("v1", "pods", namespace="kfdeploy-smoke")] = [
        ClusterError(
            "POST pods: 403 error looking up service account kfdeploy-smoke/default: serviceaccount "
            '"default" not found',
            status=403,
        )
    ]
    assert _only("gpu-schedules", [], kube, timeout=5, cluster=cluster).status == Status.passed


def test_profile_reconciles_not_applicable_on_simulated_and_without_profiles() -> None:
    result = _only("profile-reconciles", [], FakeKube(), simulated=True)
    assert result.status == Status.not_applicable
    assert "profile controller does not really run on a simulated cluster" in result.reason
    result = _only("profile-reconciles", [], FakeKube())
    assert result.reason == "the profiles component is not deployed (no Profile CRD rendered)"


def test_profile_reconciles_with_a_working_controller_and_cleans_up() -> None:
    crd = rendered(
        "CustomResourceDefinition",
        "profiles.kubeflow.org",
        api_version="apiextensions.k8s.io/v1",
        spec={"versions": [{"name": "v1", "storage": True}]},
    )

    class Controller(FakeKube):
        def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            created = super().create(path, body)
            if body["kind"] == "Profile":  # reconcile at once, as a healthy controller would
                name, owner = body["metadata"]["name"], body["spec"]["owner"]["name"]
                self.objects[path_of("v1", "namespaces", name)] = {"metadata": {"name": name}}
                self.objects[
                    path_of("rbac.authorization.k8s.io/v1", "rolebindings", "namespaceAdmin", name)
                ] = {
                    "metadata": {"name": "namespaceAdmin"},
                    "subjects": [{"kind": "User", "name": owner}],
                }
            return created

    crd_path = path_of(
        "apiextensions.k8s.io/v1", "customresourcedefinitions", "profiles.kubeflow.org"
    )
    kube = Controller({crd_path: crd.obj})
    result = _only("profile-reconciles", [crd], kube)
    assert result.status == Status.passed, result
    assert "RoleBindings namespaceAdmin" in result.reason
    assert not [p for p in kube.objects if "/profiles/" in p]

    idle = FakeKube({crd_path: crd.obj})
    result = _only("profile-reconciles", [crd], idle)
    assert result.status == Status.failed
    assert result.reason.startswith("namespace kfdeploy-smoke-")
    assert not [p for p in idle.objects if "/profiles/" in p]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_workload_in_default_namespace_when_unset(kind: str) -> None:
    obj = rendered(kind, "w")
    kube = FakeKube()
    result = _only("workloads-available", [obj], kube)
    assert f"{kind} default/w" in result.reason


def test_profile_reconciles_fails_at_once_without_the_crd_in_the_cluster() -> None:
    crd = rendered(
        "CustomResourceDefinition", "profiles.kubeflow.org", api_version="apiextensions.k8s.io/v1"
    )
    kube = FakeKube()
    result = _only("profile-reconciles", [crd], kube)
    assert result.status == Status.failed
    assert result.reason == "CustomResourceDefinition profiles.kubeflow.org is not in the cluster"
    assert not [c for c in kube.calls if c[0] == "POST"]


def test_gpu_pod_on_the_wrong_nodegroup_fails_without_waiting() -> None:
    env = {"cluster": magnum_cluster([{"name": "gpu", "flavor": "g", "count": 1, "gpus": 2}])}
    kube = SchedulingKube(_node("cpu-0", {"magnum.openstack.org/nodegroup": "default-worker"}, "1"))
    started = time.monotonic()
    result = _only("gpu-schedules", [], kube, timeout=30, **env)
    assert time.monotonic() - started < 5
    assert result.status == Status.failed
    assert result.reason.startswith("scheduled onto cpu-0, whose nodegroup default-worker")
    assert not [p for p in kube.objects if "/pods/" in p]
