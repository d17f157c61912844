"""Rules of the apply adapter that need no cluster: ApplySet IDs, content hashes, field ownership,
rollout readiness, retry classification."""

from __future__ import annotations

from typing import Any

import pytest

from kfdeploy.cluster.apply import HASH_ANNOTATION, content_hash, fields_taken, prepare
from kfdeploy.cluster.client import ApiError, RetryPolicy
from kfdeploy.cluster.inventory import PART_OF_LABEL, ApplySet, applyset_id, parse_group_kind
from kfdeploy.cluster.waits import workload_ready
from kfdeploy.plan.phases import Scope
from kfdeploy.render.objects import RenderedObject


def test_applyset_id_follows_kep_3659() -> None:
    # Value computed by hand: base64url_nopad(sha256("kfdeploy-applyset-local.kube-system.Secret."))
    import base64
    import hashlib

    raw = hashlib.sha256(b"kfdeploy-applyset-local.kube-system.Secret.").digest()
    expected = "applyset-" + base64.urlsafe_b64encode(raw).decode().rstrip("=") + "-v1"
    assert applyset_id("kfdeploy-applyset-local", "kube-system") == expected
    assert ApplySet.for_environment("local").id == expected
    assert "=" not in expected and len(expected) == len("applyset-") + 43 + len("-v1")


def test_group_kind_strings() -> None:
    assert parse_group_kind("Deployment.apps") == ("apps", "Deployment")
    assert parse_group_kind("Namespace") == ("", "Namespace")
    assert parse_group_kind("Profile.kubeflow.org") == ("kubeflow.org", "Profile")


def _cm(data: dict[str, str]) -> RenderedObject:
    return RenderedObject(
        "c",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "n"},
            "data": data,
        },
    )


def test_prepare_labels_and_hashes() -> None:
    aset = ApplySet("p")
    a = prepare(_cm({"k": "1"}), aset)
    assert a["metadata"]["labels"][PART_OF_LABEL] == aset.id
    h = a["metadata"]["annotations"][HASH_ANNOTATION]
    assert h == content_hash(a)  # the hash ignores itself
    assert prepare(_cm({"k": "1"}), aset)["metadata"]["annotations"][HASH_ANNOTATION] == h
    assert prepare(_cm({"k": "2"}), aset)["metadata"]["annotations"][HASH_ANNOTATION] != h


def test_prepare_leaves_aggregated_rules_to_the_controller_and_drops_stray_namespaces() -> None:
    role = RenderedObject(
        "c",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kubeflow-admin", "namespace": "kubeflow"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]},
            "rules": [],
        },
    )
    out = prepare(role, ApplySet("p"), Scope([role]))
    assert "rules" not in out and "namespace" not in out["metadata"]


def _mf(manager: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    e: dict[str, Any] = {"manager": manager, "operation": "Apply", "fieldsV1": fields}
    if subresource:
        e["subresource"] = subresource
    return e


DESIRED = {
    "metadata": {"name": "d", "labels": {"app": "x"}},
    "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}},
}


def test_fields_taken_finds_a_forced_takeover() -> None:
    mf = [
        _mf("kfdeploy", {"f:spec": {"f:template": {}}}),
        _mf("intruder", {"f:spec": {"f:replicas": {}}}),
        _mf(
            "other",
            {
                "f:spec": {
                    "f:template": {
                        "f:spec": {"f:containers": {'k:{"name":"c"}': {".": {}, "f:image": {}}}}
                    }
                }
            },
        ),
    ]
    taken = fields_taken(DESIRED, mf)
    assert "intruder: .spec.replicas" in taken
    assert any(t.startswith("other: .spec.template.spec.containers") for t in taken)


def test_fields_taken_ignores_status_labels_and_fields_we_do_not_set() -> None:
    mf = [
        _mf("kube-controller-manager", {"f:status": {"f:replicas": {}}}, subresource="status"),
        _mf("kube-controller-manager", {"f:metadata": {"f:annotations": {"f:rev": {}}}}),
        _mf("someone", {"f:metadata": {"f:labels": {"f:app": {}}}}),
        _mf("hpa", {"f:spec": {"f:minReadySeconds": {}}}),
        _mf(
            "other",
            {
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {'k:{"name":"sidecar"}': {".": {}, "f:image": {}}}
                        }
                    }
                }
            },
        ),
    ]
    assert fields_taken(DESIRED, mf) == []


@pytest.mark.parametrize(
    ("kind", "obj", "ready", "failed"),
    [
        (
            "Deployment",
            {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}},
            False,
            False,
        ),
        (
            "Deployment",
            {
                "metadata": {"generation": 1},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 1,
                    "updatedReplicas": 2,
                    "replicas": 2,
                    "availableReplicas": 2,
                },
            },
            True,
            False,
        ),
        (
            "Deployment",
            {
                "spec": {"replicas": 2},
                "status": {"updatedReplicas": 2, "replicas": 3, "availableReplicas": 2},
            },
            False,
            False,
        ),
        (
            "Deployment",
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                        }
                    ]
                }
            },
            False,
            True,
        ),
        (
            "StatefulSet",
            {
                "spec": {"replicas": 1},
                "status": {
                    "readyReplicas": 1,
                    "updatedReplicas": 1,
                    "currentRevision": "a",
                    "updateRevision": "a",
                },
            },
            True,
            False,
        ),
        (
            "StatefulSet",
            {
                "spec": {"replicas": 1},
                "status": {
                    "readyReplicas": 1,
                    "updatedReplicas": 0,
                    "currentRevision": "a",
                    "updateRevision": "b",
                },
            },
            False,
            False,
        ),
        (
            "DaemonSet",
            {
                "status": {
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 2,
                }
            },
            False,
            False,
        ),
        (
            "DaemonSet",
            {
                "status": {
                    "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": 3,
                    "numberAvailable": 3,
                }
            },
            True,
            False,
        ),
        ("Job", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, True, False),
        ("Job", {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}, False, True),
    ],
)
def test_rollout_readiness(kind: str, obj: dict[str, Any], ready: bool, failed: bool) -> None:
    r = workload_ready(kind, obj)
    assert (r.ready, r.failed) == (ready, failed), r.why


@pytest.mark.parametrize(
    ("status", "temporary"),
    [
        (None, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (403, False),
        (404, False),
        (409, False),
        (422, False),
    ],
)
def test_only_temporary_failures_are_retried(status: int | None, temporary: bool) -> None:
    assert ApiError("x", status=status).temporary is temporary


def test_backoff_is_bounded_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=5, base=0.5, cap=4)
    assert all(0 <= policy.delay(n) <= 4 for n in range(1, 30))
    assert policy.delay(1, retry_after=3) == 3
    assert policy.delay(1, retry_after=999) == policy.max_retry_after
