"""Prune sets (pure): what goes, what is protected, and in which order."""

from __future__ import annotations

from kfdeploy.plan.diff import object_diff
from kfdeploy.plan.phases import Phase
from kfdeploy.plan.prune import LiveRef, Protections, deletion_phases, prune_plan
from kfdeploy.render.objects import ObjectKey


def ref(group: str, kind: str, name: str, ns: str = "", **ann: str) -> LiveRef:
    return LiveRef(ObjectKey(group, kind, ns, name), component="c", annotations=ann)


CRB = ref("rbac.authorization.k8s.io", "ClusterRoleBinding", "old-binding")
DEPLOY = ref("apps", "Deployment", "minio", "kubeflow")
SVC = ref("", "Service", "minio", "kubeflow")
NS = ref("", "Namespace", "old-ns")
PVC = ref("", "PersistentVolumeClaim", "minio-pvc", "kubeflow")
PROFILE = ref("kubeflow.org", "Profile", "kubeflow-user")
CRD_USED = ref("apiextensions.k8s.io", "CustomResourceDefinition", "olds.example.com")
CRD_FREE = ref("apiextensions.k8s.io", "CustomResourceDefinition", "unused.example.com")
CR = ref("example.com", "Old", "x", "kubeflow")
HOOK = ref("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", "old-hook")
KEEP = ref("", "ConfigMap", "keep", "kubeflow")
NEVER = ref("", "ConfigMap", "precious", "kubeflow", **{"kfdeploy.cern.ch/prune": "never"})
ALL = [CRB, DEPLOY, SVC, NS, PVC, PROFILE, CRD_USED, CRD_FREE, CR, HOOK, KEEP, NEVER]


def test_members_still_rendered_are_not_pruned() -> None:
    plan = prune_plan(ALL, {KEEP.key})
    assert KEEP not in plan.delete
    assert KEEP not in [r for r, _ in plan.kept]


def test_protected_by_default() -> None:
    plan = prune_plan(ALL, {KEEP.key}, crds_in_use={"olds.example.com"})
    kept = {r.key.name: why for r, why in plan.kept}
    assert set(kept) == {"old-ns", "minio-pvc", "kubeflow-user", "olds.example.com", "precious"}
    assert "--prune-namespaces" in kept["old-ns"]
    assert "--prune-data" in kept["minio-pvc"] and "--prune-data" in kept["kubeflow-user"]
    assert "--prune-crds" in kept["olds.example.com"]
    assert "never" in kept["precious"]
    assert {r.key.name for r in plan.delete} == {
        "old-binding",
        "minio",
        "unused.example.com",
        "x",
        "old-hook",
    }


def test_flags_release_each_protection_but_never_the_annotation() -> None:
    plan = prune_plan(
        ALL,
        set(),
        crds_in_use={"olds.example.com"},
        protections=Protections(namespaces=True, data=True, crds_in_use=True),
    )
    assert [r.key.name for r, _ in plan.kept] == ["precious"]


def test_deletion_runs_in_reverse_phase_order() -> None:
    plan = prune_plan(ALL, set(), protections=Protections(True, True, True))
    order = [r.key.kind for r in plan.delete]
    # custom resources first, then webhooks, ... , CRDs and namespaces last
    assert order.index("Old") < order.index("ValidatingWebhookConfiguration")
    assert order.index("ValidatingWebhookConfiguration") < order.index("ClusterRoleBinding")
    assert order.index("Deployment") < order.index("Service")
    assert order.index("ClusterRoleBinding") < order.index("CustomResourceDefinition")
    assert order[-1] in ("Namespace", "CustomResourceDefinition")
    phases = [p for p, _ in deletion_phases(plan)]
    assert phases == sorted(phases, reverse=True)
    assert phases[0] == Phase.WORKLOADS and phases[-1] == Phase.FOUNDATION


def test_empty_inventory_prunes_nothing() -> None:
    plan = prune_plan([], {KEEP.key})
    assert not plan and plan.lines() == []


def test_object_diff_ignores_server_bookkeeping() -> None:
    key = ObjectKey("", "ConfigMap", "ns", "cm")
    live = {
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "resourceVersion": "1", "uid": "u", "managedFields": [{}]},
        "data": {"a": "1"},
    }
    same = {
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "resourceVersion": "2"},
        "data": {"a": "1"},
    }
    assert object_diff(key, "c", live, same).action == "unchanged"
    changed = {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "2"}}
    d = object_diff(key, "c", live, changed)
    assert d.action == "update" and "-  a: '1'" in d.text and "+  a: '2'" in d.text
    assert object_diff(key, "c", None, changed).action == "create"
