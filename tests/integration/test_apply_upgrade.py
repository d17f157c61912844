"""Upgrade v1.11.0 → 26.03: what 26.03 removed is pruned (in reverse phase order), protected
members are kept and reported, and user objects created in between survive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apply_support import assert_converged, fresh_cluster_fixture, platform
from crd_support import open_crd

from kfdeploy.cluster.client import Kube, connect
from kfdeploy.cluster.inventory import ApplySet
from kfdeploy.plan.phases import Scope
from kfdeploy.render.objects import RenderedObject
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.workflows.apply import ApplyOptions, apply_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPLYSET = ApplySet.for_environment("local")


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    yield from fresh_cluster_fixture(request, tmp_path_factory, "apply-upgrade")


def legacy_extras() -> list[RenderedObject]:
    """Objects an older release might have had and the newer dropped, one per protection."""

    def o(obj: dict[str, Any]) -> RenderedObject:
        return RenderedObject("legacy", obj)

    return [
        o({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "legacy-ns"}}),
        o(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "legacy-data", "namespace": "kubeflow"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ),
        o(open_crd("example.com", "widgets", "Widget")),
        o(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "legacy-settings", "namespace": "kubeflow"},
                "data": {"a": "b"},
            }
        ),
    ]


def create(kube: Kube, path: str, body: dict[str, Any]) -> None:
    kube.request("POST", path, body=body)


def user_objects(kube: Kube) -> list[str]:
    """What a user makes between the upgrades: a Profile, its namespace, a PVC, a Notebook, a
    Widget. (The simulated cluster runs no profile controller, so the namespace is made by hand
    the way the controller would.)"""
    create(
        kube,
        "/apis/kubeflow.org/v1/profiles",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": "alice"},
            "spec": {"owner": {"kind": "User", "name": "alice@example.com"}},
        },
    )
    create(
        kube,
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "alice",
                "labels": {"app.kubernetes.io/part-of": "kubeflow-profile"},
            },
        },
    )
    create(
        kube,
        "/api/v1/namespaces/alice/persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "workspace"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "5Gi"}},
            },
        },
    )
    create(
        kube,
        "/apis/kubeflow.org/v1/namespaces/alice/notebooks",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Notebook",
            "metadata": {"name": "nb"},
            "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "jupyter:1"}]}}},
        },
    )
    create(
        kube,
        "/apis/example.com/v1/namespaces/alice/widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    return [
        "/apis/kubeflow.org/v1/profiles/alice",
        "/api/v1/namespaces/alice",
        "/api/v1/namespaces/alice/persistentvolumeclaims/workspace",
        "/apis/kubeflow.org/v1/namespaces/alice/notebooks/nb",
        "/apis/example.com/v1/namespaces/alice/widgets/w",
    ]


def test_upgrade_prunes_what_the_release_removed_and_keeps_user_objects(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    kube = connect(cluster.kubeconfig_path)
    old = platform("v1.11.0", tmp_path / "env-111") + legacy_extras()
    new = platform("26.03", tmp_path / "env-2603")
    first = apply_objects(kube, old, APPLYSET, options=ApplyOptions(timeout=900))
    assert not first.failed and not first.prune.delete
    paths = user_objects(kube)

    old_scope, new_scope = Scope(old), Scope(new)
    new_keys = {new_scope.key(o) for o in new}
    removed = {old_scope.key(o) for o in old} - new_keys
    protected = {"legacy-ns", "legacy-data", "widgets.example.com"}
    assert len(removed) > len(protected)

    summary = apply_objects(kube, new, APPLYSET, options=ApplyOptions(timeout=900))
    assert not summary.failed, summary.failed
    pruned = {o.key for o in summary.outcomes if o.action == "pruned"}
    assert pruned == {k for k in removed if k.name not in protected}
    kept = {r.key.name: why for r, why in summary.prune.kept}
    assert set(kept) == protected
    assert "custom resources" in kept["widgets.example.com"]
    for key in pruned:
        res = kube.discovery.require(key.group, key.kind)
        assert kube.get_or_none(res.path(key.name, key.namespace)) is None, f"{key} still there"
    for path in paths:
        assert kube.get_or_none(path) is not None, f"user object {path} was deleted"

    # The cluster equals the new render, apart from the protected leftovers, and the ApplySet
    # still lists those (so a later run with the flags can prune them).
    assert_converged(kube, new + [o for o in old if o.name in protected])
    parent = APPLYSET.read(kube)
    assert parent is not None and ("example.com", "Widget") not in parent.group_kinds
    assert ("apiextensions.k8s.io", "CustomResourceDefinition") in parent.group_kinds
