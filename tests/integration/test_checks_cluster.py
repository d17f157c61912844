"""Smoke checks against the real local control plane: real scheduler messages, real CRD status.

Each test creates the few objects it needs with the `kubernetes` client (no platform apply) and
passes them as the "rendered" objects, so the checks compare exactly what the test made.
"""

from __future__ import annotations

import base64
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_support import open_crd
from kubernetes import client as k8s
from typer.testing import CliRunner

from kfdeploy.checks import run_checks
from kfdeploy.checks.framework import CheckResult, Status
from kfdeploy.config.model import Environment
from kfdeploy.render.objects import RenderedObject
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.sim.testing import GPU_TAINT, wait_for

pytestmark = pytest.mark.integration

PAUSE = "registry.k8s.io/pause:3.10"  # never pulled: no container runs on a simulated node
GPU_GROUP = {"name": "gpu", "flavor": "g1.a100", "count": 1, "gpus": 2, "taints": [GPU_TAINT]}
MAGNUM = {
    "provider": "magnum",
    "template": {"name": "t"},
    "masters": {"flavor": "m"},
    "workers": {"name": "default-worker", "flavor": "w", "count": 2},
}


def _env(kubeconfig: Path, simulated: bool = False, **cluster: Any) -> Environment:
    return Environment.model_validate(
        {
            "name": "smoke-it",
            "simulated": simulated,
            "kubeflow": {"release": "26.03"},
            "cluster": {"provider": "kubeconfig", "kubeconfig": str(kubeconfig), **cluster},
            "smoke": {"timeout": 60},
        }
    )


def _one(
    env: Environment, check: str, objects: list[RenderedObject], timeout: float
) -> CheckResult:
    report = run_checks(env, env.cluster.kubeconfig, objects, only=[check], timeout=timeout)
    (result,) = report.results
    return result


def _deployment(name: str, namespace: str, cpu: str = "10m") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "main", "image": PAUSE, "resources": {"requests": {"cpu": cpu}}}
                    ]
                },
            },
        },
    }


@pytest.fixture
def kubeconfig(sim_cluster: LocalCluster) -> Path:
    return sim_cluster.kubeconfig_path


def _create(api: k8s.ApiClient, obj: dict[str, Any]) -> RenderedObject:
    from kubernetes import utils

    utils.create_from_dict(api, obj)
    return RenderedObject("it", obj)


# ---- workloads-available ------------------------------------------------------------------------


def test_healthy_deployment_passes(api: k8s.ApiClient, namespace: str, kubeconfig: Path) -> None:
    obj = _create(api, _deployment("healthy", namespace))
    result = _one(_env(kubeconfig), "workloads-available", [obj], timeout=60)
    assert result.status == Status.passed, result
    assert result.reason == "1 workloads ready"


def test_pending_deployment_fails_with_the_schedulers_reason(
    api: k8s.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    healthy = _create(api, _deployment("fine", namespace))
    pending = _create(api, _deployment("too-big", namespace, cpu="500"))  # no node has 500 CPUs
    missing = RenderedObject(
        "katib",
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "never-applied", "namespace": namespace},
        },
    )
    # Let the scheduler look at the pod first: its message is what the check must quote.
    core = k8s.CoreV1Api(api)
    wait_for(
        "the scheduler's verdict",
        lambda: [
            c
            for p in core.list_namespaced_pod(namespace, label_selector="app=too-big").items
            for c in (p.status.conditions or [])
            if c.type == "PodScheduled" and c.status == "False"
        ],
        60,
    )
    result = _one(_env(kubeconfig), "workloads-available", [healthy, pending, missing], timeout=5)
    assert result.status == Status.failed
    assert result.reason.startswith(
        f"2 of 3 workloads not ready: Deployment {namespace}/too-big, "
        f"StatefulSet {namespace}/never-applied"
    ), result.reason
    text = "\n".join(result.details)
    assert f"Deployment {namespace}/too-big (it):" in text
    assert "Insufficient cpu" in text, text
    assert "Unschedulable" in text
    assert f"StatefulSet {namespace}/never-applied (katib): not found in the cluster" in text


# ---- gpu-schedules -------------------------------------------------------------------------------


def _smoke_pods(api: k8s.ApiClient) -> list[Any]:
    pods = (
        k8s.CoreV1Api(api)
        .list_namespaced_pod(
            "kfdeploy-smoke", label_selector="kfdeploy.cern.ch/check=gpu-schedules"
        )
        .items
    )
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_gpu_pod_schedules_on_the_gpu_nodegroup(api: k8s.ApiClient, kubeconfig: Path) -> None:
    env = _env(kubeconfig, **{**MAGNUM, "nodegroups": [GPU_GROUP]})
    result = _one(env, "gpu-schedules", [], timeout=60)
    assert result.status == Status.passed, result
    assert result.reason == "scheduled onto sim-gpu-0 (nodegroup gpu)"
    assert _smoke_pods(api) == []  # cleaned up


def test_gpu_pod_on_an_existing_cluster_needs_gpu_capacity_only(
    api: k8s.ApiClient, kubeconfig: Path
) -> None:
    env = _env(kubeconfig, nodegroups=[GPU_GROUP])
    result = _one(env, "gpu-schedules", [], timeout=60)
    assert result.status == Status.passed, result
    assert result.reason == "scheduled onto sim-gpu-0 (2 x nvidia.com/gpu)"


def test_gpu_pod_without_tolerations_fails_with_the_taint(
    api: k8s.ApiClient, kubeconfig: Path
) -> None:
    # The environment forgot its GPU nodes' taint: the probe cannot land, and says why.
    env = _env(kubeconfig, nodegroups=[{**GPU_GROUP, "taints": []}])
    result = _one(env, "gpu-schedules", [], timeout=4)
    assert result.status == Status.failed
    assert "not scheduled: Unschedulable" in result.reason
    assert "untolerated taint" in result.reason
    wait_for("the probe pod to be deleted", lambda: _smoke_pods(api) == [], 30)


def test_gpu_not_applicable_without_gpu_nodegroups(kubeconfig: Path) -> None:
    result = _one(_env(kubeconfig), "gpu-schedules", [], timeout=5)
    assert result.status == Status.not_applicable


# ---- crds-established ----------------------------------------------------------------------------


@pytest.fixture
def crd(api: k8s.ApiClient) -> Iterator[dict[str, Any]]:
    group = f"t{uuid.uuid4().hex[:8]}.smoke.kfdeploy.dev"
    obj = open_crd(group, "widgets", "Widget")
    k8s.ApiextensionsV1Api(api).create_custom_resource_definition(obj)
    yield obj
    k8s.ApiextensionsV1Api(api).delete_custom_resource_definition(obj["metadata"]["name"])


def test_crd_established_passes_and_a_missing_one_fails(
    crd: dict[str, Any], kubeconfig: Path
) -> None:
    env = _env(kubeconfig)
    result = _one(env, "crds-established", [RenderedObject("it", crd)], timeout=30)
    assert result.status == Status.passed, result

    missing = {**crd, "metadata": {"name": "gadgets.nowhere.kfdeploy.dev"}}
    result = _one(
        env, "crds-established", [RenderedObject("it", crd), RenderedObject("it", missing)], 3
    )
    assert result.status == Status.failed
    assert result.details == (
        "CustomResourceDefinition gadgets.nowhere.kfdeploy.dev: not found in the cluster",
    )


# ---- webhooks-ready ------------------------------------------------------------------------------


def _webhook(name: str, namespace: str, service: str, ca: bytes | None) -> dict[str, Any]:
    client_config: dict[str, Any] = {
        "service": {"namespace": namespace, "name": service, "port": 443}
    }
    if ca is not None:
        client_config["caBundle"] = base64.b64encode(ca).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "check.smoke.kfdeploy.dev",
                "clientConfig": client_config,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                # Never called: it matches only namespaces with a label nothing carries, and would
                # be ignored if it were (no other test may feel this webhook).
                "failurePolicy": "Ignore",
                "namespaceSelector": {"matchLabels": {"smoke.kfdeploy.dev/never": name}},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
            }
        ],
    }


def _service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 443, "targetPort": 8443}]},
    }


def test_webhook_without_ca_bundle_or_endpoints_fails_then_passes(
    api: k8s.ApiClient, namespace: str, kubeconfig: Path, sim_cluster: LocalCluster
) -> None:
    name = f"smoke-{namespace}"[:63]
    _create(api, _service("hook", namespace))
    admission = k8s.AdmissionregistrationV1Api(api)
    hook = _create(api, _webhook(name, namespace, "hook", ca=None))
    try:
        env = _env(kubeconfig)
        result = _one(env, "webhooks-ready", [hook], timeout=3)
        assert result.status == Status.failed
        where = f"ValidatingWebhookConfiguration {name} webhook check.smoke.kfdeploy.dev"
        assert result.details == (
            f"{where}: caBundle is empty (CA not injected)",
            f"{where}: service {namespace}/hook has no ready endpoints",
        )

        # Inject a bundle and start the backend: the endpoint slice controller publishes the
        # fake kubelet's Ready pod, and the check passes.
        admission.patch_validating_webhook_configuration(
            name, _webhook(name, namespace, "hook", ca=sim_cluster.ca_cert_pem)
        )
        _create(api, {**_deployment("hook", namespace)})
        result = _one(env, "webhooks-ready", [hook], timeout=60)
        assert result.status == Status.passed, result
    finally:
        admission.delete_validating_webhook_configuration(name)


def test_webhooks_not_applicable_when_the_sim_overlay_removed_them(kubeconfig: Path) -> None:
    env = Environment.model_validate(
        {
            **_env(kubeconfig, simulated=True).model_dump(mode="json", by_alias=True),
            "overlays": {"sim": {}},
        }
    )
    result = _one(env, "webhooks-ready", [], timeout=5)
    assert result.status == Status.not_applicable
    assert "sim overlay removes webhooks" in result.reason


# ---- profile-reconciles and the command ------------------------------------------------------------


def test_profile_reconciles_not_applicable_on_simulated(kubeconfig: Path) -> None:
    result = _one(_env(kubeconfig, simulated=True), "profile-reconciles", [], timeout=5)
    assert result.status == Status.not_applicable
    assert "profile controller does not really run on a simulated cluster" in result.reason


PROFILE_CRD = open_crd("kubeflow.org", "profiles", "Profile", scope="Cluster")


def _fake_profile_controller(api: k8s.ApiClient, stop: threading.Event) -> None:
    """What Kubeflow's profile controller does that the check looks at: namespace + binding."""
    custom, core, rbac = (
        k8s.CustomObjectsApi(api),
        k8s.CoreV1Api(api),
        k8s.RbacAuthorizationV1Api(api),
    )
    done: set[str] = set()
    while not stop.wait(0.3):
        for profile in custom.list_cluster_custom_object("kubeflow.org", "v1", "profiles")["items"]:
            name = profile["metadata"]["name"]
            if name in done or profile["metadata"].get("deletionTimestamp"):
                continue
            core.create_namespace({"metadata": {"name": name}})
            rbac.create_namespaced_role_binding(
                name,
                {
                    "metadata": {"name": "namespaceAdmin"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "kubeflow-admin",
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "User",
                            "name": profile["spec"]["owner"]["name"],
                        }
                    ],
                },
            )
            done.add(name)


def test_profile_reconciles_with_a_working_controller(api: k8s.ApiClient, kubeconfig: Path) -> None:
    # The real controller cannot run here; a stand-in proves the check's side against a real
    # API server: the CR is accepted, the namespace and binding are seen, the Profile is deleted.
    extensions = k8s.ApiextensionsV1Api(api)
    try:
        extensions.create_custom_resource_definition(PROFILE_CRD)
        created = True
    except k8s.ApiException as exc:
        if exc.status != 409:  # another test in this session applied the real one: share it
            raise
        created = False
    stop = threading.Event()
    controller = threading.Thread(target=_fake_profile_controller, args=(api, stop), daemon=True)
    try:
        wait_for("the Profile CRD to be served", lambda: _established(extensions), 30)
        controller.start()
        result = _one(
            _env(kubeconfig), "profile-reconciles", [RenderedObject("profiles", PROFILE_CRD)], 30
        )
        assert result.status == Status.passed, result
        assert result.reason.startswith("Profile kfdeploy-smoke-")
        assert result.reason.endswith("reconciled: namespace and RoleBindings namespaceAdmin")
        profiles = k8s.CustomObjectsApi(api).list_cluster_custom_object(
            "kubeflow.org", "v1", "profiles"
        )
        assert profiles["items"] == []  # the check deleted its Profile

        stop.set()  # no controller: the check fails and says what is missing
        result = _one(
            _env(kubeconfig), "profile-reconciles", [RenderedObject("profiles", PROFILE_CRD)], 2
        )
        assert result.status == Status.failed
        assert "not created" in result.reason
    finally:
        stop.set()
        if controller.is_alive():
            controller.join(5)
        if created:
            extensions.delete_custom_resource_definition("profiles.kubeflow.org")
        for ns in k8s.CoreV1Api(api).list_namespace().items:
            if ns.metadata.name.startswith("kfdeploy-smoke-"):
                k8s.CoreV1Api(api).delete_namespace(ns.metadata.name)


def _established(extensions: k8s.ApiextensionsV1Api) -> bool:
    crd = extensions.read_custom_resource_definition("profiles.kubeflow.org")
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def test_smoke_command_end_to_end(tmp_path: Path, kubeconfig: Path, manifests_dir: Path) -> None:
    import typer

    from kfdeploy.cli import smoke as smoke_cli

    env_file = tmp_path / "smoke-it.yaml"
    env_file.write_text(
        yaml.safe_dump(
            {
                "name": "smoke-it",
                "simulated": True,
                "kubeflow": {"release": "26.03", "components": ["profiles"]},
                "cluster": {
                    "provider": "kubeconfig",
                    "kubeconfig": str(kubeconfig),
                    "nodegroups": [GPU_GROUP],
                },
                "smoke": {"checks": ["gpu-schedules", "profile-reconciles"], "timeout": 60},
            }
        )
    )
    app = typer.Typer()
    smoke_cli.register(app)
    app.callback()(lambda: None)
    junit = tmp_path / "smoke.xml"
    result = CliRunner().invoke(
        app,
        [
            "smoke",
            str(env_file),
            "--manifests",
            str(manifests_dir),
            "--junit",
            str(junit),
            "--output",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    assert [(c["name"], c["status"]) for c in data["checks"]] == [
        ("gpu-schedules", "passed"),
        ("profile-reconciles", "not-applicable"),
    ]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert [suite.get(a) for a in ("tests", "failures", "errors", "skipped")] == [
        "2",
        "0",
        "0",
        "1",
    ]
