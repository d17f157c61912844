"""Pure cluster planning: environment cluster section + observed cloud -> ordered changes."""

from __future__ import annotations

from typing import Any

import pytest

from kfdeploy.cloud.plan import (
    ClusterPlan,
    Observed,
    ObservedCluster,
    ObservedNodeGroup,
    ObservedTemplate,
    cluster_body,
    kubelet_options,
    nodegroup_body,
    plan_cluster,
)
from kfdeploy.config.model import Cluster, Taint

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def staging(**overrides: Any) -> Cluster:
    """A cern-staging-shaped cluster section."""
    data: dict[str, Any] = {
        "provider": "magnum",
        "cloud": "cern",
        "template": {
            "name": "kubernetes-1.36-cern",
            "create": True,
            "image": "fedora-coreos-40",
            "labels": {"kube_tag": "v1.36.3", "cern_enabled": "true"},
        },
        "masters": {"flavor": "m2.medium", "count": 3},
        "workers": {
            "name": "default-worker",
            "flavor": "m2.xlarge",
            "count": 3,
            "min": 1,
            "max": 6,
        },
        "nodegroups": [
            {
                "name": "gpu-a100",
                "flavor": "g1.a100.x2",
                "count": 2,
                "min": 0,
                "max": 4,
                "gpus": 2,
                "labels": {"nvidia.com/gpu.present": "true"},
                "taints": [GPU_TAINT],
            }
        ],
    }
    data.update(overrides)
    return Cluster.model_validate(data)


def template(name: str = "kubernetes-1.36-cern", uuid: str = "t-1") -> ObservedTemplate:
    return ObservedTemplate(
        uuid=uuid,
        name=name,
        image_id="fedora-coreos-40",
        labels={"kube_tag": "v1.36.3", "cern_enabled": "true"},
    )


def worker(**kw: Any) -> ObservedNodeGroup:
    base: dict[str, Any] = dict(
        name="default-worker",
        role="worker",
        flavor="m2.xlarge",
        node_count=3,
        min_node_count=1,
        max_node_count=6,
        labels={"min_node_count": "1", "max_node_count": "6"},
        is_default=True,
    )
    base.update(kw)
    return ObservedNodeGroup(**base)


def gpu(**kw: Any) -> ObservedNodeGroup:
    base: dict[str, Any] = dict(
        name="gpu-a100",
        role="worker",
        flavor="g1.a100.x2",
        node_count=2,
        min_node_count=0,
        max_node_count=4,
        labels={
            "kubelet_options": "--node-labels=nvidia.com/gpu.present=true "
            "--register-with-taints=nvidia.com/gpu=present:NoSchedule"
        },
    )
    base.update(kw)
    return ObservedNodeGroup(**base)


def master() -> ObservedNodeGroup:
    return ObservedNodeGroup(
        name="default-master",
        role="master",
        flavor="m2.medium",
        node_count=3,
        min_node_count=3,
        is_default=True,
    )


def cluster(*groups: ObservedNodeGroup, **kw: Any) -> ObservedCluster:
    base: dict[str, Any] = dict(
        uuid="c-1",
        name="kfdeploy-staging",
        status="CREATE_COMPLETE",
        template_id="t-1",
        template_name="kubernetes-1.36-cern",
        api_address="https://10.0.0.1:6443",
        master_count=3,
        nodegroups=(master(), *(groups or (worker(), gpu()))),
    )
    base.update(kw)
    return ObservedCluster(**base)


def run(desired: Cluster, observed: Observed, prune: bool = False) -> ClusterPlan:
    return plan_cluster(desired, "kfdeploy-staging", observed, environment="staging", prune=prune)


def lines(plan: ClusterPlan) -> list[str]:
    return [c.describe() for c in plan.changes]


def test_fresh_cloud_creates_template_cluster_then_gpu_nodegroup() -> None:
    plan = run(staging(), Observed())
    assert lines(plan) == [
        "create-template template kubernetes-1.36-cern: image fedora-coreos-40, 2 labels",
        "create-cluster cluster kfdeploy-staging: template kubernetes-1.36-cern, "
        "3 x m2.medium masters, 3 x m2.xlarge workers (min..max 1..6)",
        "create-nodegroup nodegroup gpu-a100: 2 x g1.a100.x2 (min..max 0..4); "
        "2 GPU(s) per node; taints nvidia.com/gpu=present:NoSchedule",
    ]
    assert not plan.exists and not plan.is_noop


def test_existing_template_is_used_not_created() -> None:
    plan = run(staging(), Observed(templates=(template(),)))
    assert [c.action for c in plan.changes] == ["create-cluster", "create-nodegroup"]


def test_missing_template_without_create_blocks() -> None:
    desired = staging(template={"name": "site-template", "create": False})
    plan = run(desired, Observed())
    assert plan.blockers and "site-template" in plan.blockers[0]
    assert not plan.is_noop


def test_matching_cloud_is_a_noop() -> None:
    plan = run(staging(), Observed((template(),), cluster()))
    assert plan.is_noop
    assert plan.changes == () and plan.notes == ()
    assert "no changes" in "\n".join(plan.lines())


def test_add_gpu_nodegroup_to_existing_cluster() -> None:
    plan = run(staging(), Observed((template(),), cluster(worker())))
    assert lines(plan) == [
        "create-nodegroup nodegroup gpu-a100: 2 x g1.a100.x2 (min..max 0..4); "
        "2 GPU(s) per node; taints nvidia.com/gpu=present:NoSchedule",
    ]


def test_resize_default_worker_3_to_5() -> None:
    desired = staging(
        workers={"name": "default-worker", "flavor": "m2.xlarge", "count": 5, "min": 1, "max": 6}
    )
    plan = run(desired, Observed((template(),), cluster()))
    assert lines(plan) == ["resize-nodegroup nodegroup default-worker: 3 -> 5 nodes"]
    assert dict(plan.changes[0].params) == {"nodegroup": "default-worker", "node_count": 5}


def test_drift_resized_behind_our_back_is_corrected() -> None:
    plan = run(staging(), Observed((template(),), cluster(worker(), gpu(node_count=4))))
    assert lines(plan) == ["resize-nodegroup nodegroup gpu-a100: 4 -> 2 nodes"]


def test_bounds_only() -> None:
    plan = run(
        staging(),
        Observed((template(),), cluster(worker(min_node_count=2, max_node_count=3), gpu())),
    )
    assert lines(plan) == [
        "update-nodegroup-bounds nodegroup default-worker: min..max 2..3 -> 1..6",
    ]


@pytest.mark.parametrize(
    ("have", "want", "expected"),
    [
        # current count fits the new bounds: bounds first, then resize
        ((3, 1, 6), (8, 2, 10), ["bounds 2..10", "resize 8"]),
        # new count fits the old bounds, current does not fit the new ones: resize first
        ((5, 1, 6), (2, 1, 3), ["resize 2", "bounds 1..3"]),
        # neither: widen to cover both, resize, narrow
        ((5, 4, 6), (1, 0, 2), ["bounds 0..6", "resize 1", "bounds 0..2"]),
    ],
)
def test_bounds_and_resize_are_ordered_so_magnum_accepts_each_step(
    have: tuple[int, int, int], want: tuple[int, int, int], expected: list[str]
) -> None:
    count, low, high = want
    desired = staging(
        workers={
            "name": "default-worker",
            "flavor": "m2.xlarge",
            "count": count,
            "min": low,
            "max": high,
        }
    )
    h_count, h_low, h_high = have
    observed = Observed(
        (template(),),
        cluster(worker(node_count=h_count, min_node_count=h_low, max_node_count=h_high), gpu()),
    )
    steps = []
    for c in run(desired, observed).changes:
        if c.action == "resize-nodegroup":
            steps.append(f"resize {c.params['node_count']}")
        else:
            steps.append(f"bounds {c.params['min_node_count']}..{c.params['max_node_count']}")
    assert steps == expected
    # every intermediate state satisfies min <= count <= max (what Magnum validates)
    n, lo, hi = h_count, h_low, h_high
    for c in run(desired, observed).changes:
        if c.action == "resize-nodegroup":
            n = int(c.params["node_count"])
        else:
            lo, hi = int(c.params["min_node_count"]), int(c.params["max_node_count"])
        assert lo <= n <= hi


def test_upgrade_via_new_template_creates_it_then_upgrades_each_nodegroup() -> None:
    desired = staging(
        template={
            "name": "kubernetes-1.37-cern",
            "create": True,
            "image": "fedora-coreos-41",
            "labels": {"kube_tag": "v1.37.0"},
        }
    )
    observed = Observed((), cluster(worker(version="v1.36.3"), gpu(version="v1.36.3")))
    plan = run(desired, observed)
    assert lines(plan) == [
        "create-template template kubernetes-1.37-cern: image fedora-coreos-41, 1 labels",
        "upgrade-cluster cluster kfdeploy-staging: template kubernetes-1.36-cern -> "
        "kubernetes-1.37-cern",
        # Magnum upgrades default-worker with the cluster; other nodegroups one by one
        "upgrade-nodegroup nodegroup gpu-a100: to template kubernetes-1.37-cern (nodes at v1.36.3)",
    ]


def test_nodegroup_left_behind_by_an_interrupted_upgrade_is_upgraded() -> None:
    observed = Observed(
        (template(),),
        cluster(worker(version="v1.37.0"), gpu(version="v1.36.3"), coe_version="v1.37.0"),
    )
    assert lines(run(staging(), observed)) == [
        "upgrade-nodegroup nodegroup gpu-a100: to template kubernetes-1.36-cern (nodes at v1.36.3)",
    ]


def test_nodegroup_not_in_env_is_only_deleted_with_prune() -> None:
    extra = ObservedNodeGroup(name="gpu-v100", role="worker", flavor="g1.v100.x1", node_count=1)
    observed = Observed((template(),), cluster(worker(), gpu(), extra))
    kept = run(staging(), observed)
    assert kept.is_noop
    assert any("gpu-v100" in n and "--prune" in n for n in kept.notes)
    pruned = run(staging(), observed, prune=True)
    assert lines(pruned) == [
        "delete-nodegroup nodegroup gpu-v100: not in the environment (1 x g1.v100.x1)",
    ]


def test_failed_nodegroup_is_replaced() -> None:
    observed = Observed(
        (template(),), cluster(worker(), gpu(status="CREATE_FAILED", status_reason="No valid host"))
    )
    assert [c.action for c in run(staging(), observed).changes] == [
        "delete-nodegroup",
        "create-nodegroup",
    ]


def test_failed_cluster_blocks_with_reason() -> None:
    observed = Observed(
        (template(),), cluster(status="CREATE_FAILED", status_reason="Quota exceeded for instances")
    )
    plan = run(staging(), observed)
    assert plan.blockers and "Quota exceeded for instances" in plan.blockers[0]


def test_unchangeable_differences_are_notes_not_changes() -> None:
    observed = Observed((template(),), cluster(worker(), gpu(flavor="g1.a100.x1", labels={})))
    plan = run(staging(), observed)
    assert plan.is_noop
    assert any("flavor" in n for n in plan.notes)
    assert any("labels/taints" in n for n in plan.notes)


def test_plan_json_shape() -> None:
    data = run(staging(), Observed()).to_dict()
    assert set(data) == {
        "environment",
        "provider",
        "cluster",
        "exists",
        "noop",
        "changes",
        "notes",
        "blockers",
    }
    assert data["changes"][2] == {
        "action": "create-nodegroup",
        "target": "nodegroup gpu-a100",
        "detail": "2 x g1.a100.x2 (min..max 0..4); 2 GPU(s) per node; "
        "taints nvidia.com/gpu=present:NoSchedule",
        "params": {"nodegroup": "gpu-a100"},
    }


def test_kubeconfig_provider_plan_is_noop() -> None:
    desired = Cluster.model_validate({"provider": "kubeconfig", "kubeconfig": "/nonexistent"})
    assert plan_cluster(desired, "x", Observed()).is_noop


def test_labels_and_taints_travel_in_kubelet_options_sorted() -> None:
    taints = [Taint(key="b", effect="NoSchedule"), Taint(key="a", value="v", effect="NoExecute")]
    assert kubelet_options({"z": "1", "a": "2"}, taints) == (
        "--node-labels=a=2,z=1 --register-with-taints=a=v:NoExecute,b:NoSchedule"
    )
    assert kubelet_options({}, []) is None


def test_request_bodies() -> None:
    desired = staging(create_timeout=3601)
    body = cluster_body(desired, "kfdeploy-staging")
    assert body["create_timeout"] == 61  # minutes, rounded up
    assert body["labels"] == {"min_node_count": "1", "max_node_count": "6"}
    assert body["merge_labels"] is True
    ng = nodegroup_body(desired.nodegroups[0])
    assert ng == {
        "name": "gpu-a100",
        "flavor_id": "g1.a100.x2",
        "node_count": 2,
        "min_node_count": 0,
        "max_node_count": 4,
        "role": "worker",
        "merge_labels": True,
        "labels": {
            "kubelet_options": "--node-labels=nvidia.com/gpu.present=true "
            "--register-with-taints=nvidia.com/gpu=present:NoSchedule"
        },
    }
