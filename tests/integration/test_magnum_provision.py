"""End to end through real openstacksdk, over HTTP, to the emulator, whose clusters are real local
control planes: provision a cern-staging-shaped cluster with a GPU nodegroup, read its nodes
through the kubeconfig kfdeploy obtained, prove idempotence, correct drift, upgrade, delete.

One emulated cluster at a time (each is a real etcd + apiserver + controllers): the tests run in
order and share it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kfdeploy.cloud.magnum.provider import MagnumProvider
from kfdeploy.cloud.magnum.waits import WaitSettings
from kfdeploy.config.load import load_environment
from kfdeploy.config.model import Environment
from kfdeploy.errors import KfdeployError
from kfdeploy.sim import binaries
from kfdeploy.sim.magnum.config import LOCAL_CLOUD
from kfdeploy.sim.magnum.server import Emulator, running
from kfdeploy.sim.magnum.testing import (
    fast_config,
    mutating_requests,
    staging_environment,
    write_environment,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]

FAST = WaitSettings(poll=0.3, poll_max=1.5)
MAGNUM = "magnum.openstack.org"
TIMINGS: dict[str, float] = {}


def _require_control_plane() -> None:
    try:
        binaries.require()
    except KfdeployError as exc:
        reason = f"simulated control plane unavailable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    _require_control_plane()
    state = tmp_path_factory.mktemp("magnum-e2e")
    with running(fast_config(state, backend="local")) as em:
        em.write_clouds_yaml(state / "clouds.yaml")
        yield em


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envs")


def environment(env_dir: Path, **cluster: Any) -> Environment:
    data = staging_environment(LOCAL_CLOUD, name="kfdeploy-staging", **cluster)
    return load_environment(str(write_environment(env_dir, "staging", data))).env


def provider(em: Emulator, env: Environment) -> MagnumProvider:
    return MagnumProvider(env, clouds_file=em.config.state_dir / "clouds.yaml", waits=FAST)


def nodes(kubeconfig: Path) -> list[Any]:
    api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    try:
        return list(k8s.CoreV1Api(api).list_node(_request_timeout=15).items)
    finally:
        api.close()


def group_nodes(kubeconfig: Path, group: str) -> list[Any]:
    return [n for n in nodes(kubeconfig) if n.metadata.labels.get(f"{MAGNUM}/nodegroup") == group]


def test_provision_staging_cluster_with_gpu_nodegroup(
    emulator: Emulator, env_dir: Path, tmp_path: Path
) -> None:
    env = environment(env_dir)
    p = provider(emulator, env)
    plan = p.plan(env)
    assert [c.action for c in plan.changes] == [
        "create-template",
        "create-cluster",
        "create-nodegroup",
    ]
    started = time.monotonic()
    result = p.apply(plan)
    TIMINGS["provision"] = time.monotonic() - started
    assert len(result.applied) == 3

    kubeconfig = p.kubeconfig(env, tmp_path / "kubeconfig")
    assert (kubeconfig.stat().st_mode & 0o777) == 0o600
    gpu = group_nodes(kubeconfig, "gpu-a100")
    assert len(gpu) == 2
    for node in gpu:
        labels = node.metadata.labels
        assert labels[f"{MAGNUM}/role"] == "worker"
        assert labels["nvidia.com/gpu.present"] == "true"
        assert labels["node.kubernetes.io/instance-type"] == "g1.a100.x2"
        assert node.status.capacity["nvidia.com/gpu"] == "2"
        assert node.status.capacity["cpu"] == "32"
        assert node.status.capacity["memory"] == "128Gi"
        taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
        assert ("nvidia.com/gpu", "present", "NoSchedule") in taints
        ready = {c.type: c.status for c in node.status.conditions}
        assert ready["Ready"] == "True"
    workers = group_nodes(kubeconfig, "default-worker")
    assert len(workers) == 3
    assert all(
        n.status.capacity["cpu"] == "8" and "nvidia.com/gpu" not in n.status.capacity
        for n in workers
    )
    assert len(group_nodes(kubeconfig, "default-master")) == 3

    status = p.status(env)
    assert status.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    assert {g.name: g.node_count for g in status.nodegroups} == {
        "default-master": 3,
        "default-worker": 3,
        "gpu-a100": 2,
    }


def test_second_run_makes_no_mutating_request(emulator: Emulator, env_dir: Path) -> None:
    env = environment(env_dir)
    p = provider(emulator, env)
    emulator.reset_requests()
    plan = p.plan(env)
    assert plan.is_noop, plan.lines()
    result = p.apply(plan)
    assert not result.changed
    assert mutating_requests(emulator) == []


def test_drift_shows_in_plan_and_is_corrected(
    emulator: Emulator, env_dir: Path, tmp_path: Path
) -> None:
    env = environment(env_dir)
    p = provider(emulator, env)
    # Someone resizes the GPU nodegroup behind kfdeploy's back.
    raw = p.client.find_cluster(env.cluster_name)
    assert raw is not None
    p.client.resize(str(raw["uuid"]), "gpu-a100", 3)
    p._wait_idle(str(raw["uuid"]), lambda _: None)
    kubeconfig = p.kubeconfig(env, tmp_path / "kubeconfig")
    assert len(group_nodes(kubeconfig, "gpu-a100")) == 3

    plan = p.plan(env)
    assert [c.describe() for c in plan.changes] == [
        "resize-nodegroup nodegroup gpu-a100: 3 -> 2 nodes"
    ]
    emulator.reset_requests()
    p.apply(plan)
    posts = [r for r in mutating_requests(emulator)]
    assert [(r["method"], r["path"].rsplit("/", 2)[-2:]) for r in posts] == [
        ("POST", ["actions", "resize"])
    ]
    assert len(group_nodes(kubeconfig, "gpu-a100")) == 2
    assert p.plan(env).is_noop


def test_resize_default_worker_and_widen_bounds(
    emulator: Emulator, env_dir: Path, tmp_path: Path
) -> None:
    env = environment(
        env_dir,
        workers={"name": "default-worker", "flavor": "m2.xlarge", "count": 8, "min": 2, "max": 10},
    )
    p = provider(emulator, env)
    plan = p.plan(env)
    assert [c.action for c in plan.changes] == ["update-nodegroup-bounds", "resize-nodegroup"]
    p.apply(plan)
    kubeconfig = p.kubeconfig(env, tmp_path / "kubeconfig")
    assert len(group_nodes(kubeconfig, "default-worker")) == 8
    assert p.plan(env).is_noop


def test_upgrade_via_new_template(emulator: Emulator, env_dir: Path) -> None:
    env = environment(
        env_dir,
        template={
            "name": "kubernetes-1.37-cern",
            "create": True,
            "image": "fedora-coreos-41",
            "labels": {"kube_tag": "v1.37.0", "cern_enabled": "true"},
        },
        workers={"name": "default-worker", "flavor": "m2.xlarge", "count": 8, "min": 2, "max": 10},
    )
    p = provider(emulator, env)
    plan = p.plan(env)
    assert [c.action for c in plan.changes] == [
        "create-template",
        "upgrade-cluster",
        "upgrade-nodegroup",
    ]
    p.apply(plan)
    status = p.status(env)
    assert status.template == "kubernetes-1.37-cern"
    assert status.coe_version == "v1.37.0"
    raw = p.client.find_cluster(env.cluster_name)
    assert raw is not None
    versions = {g["name"]: g.get("version") for g in p.client.nodegroups(str(raw["uuid"]))}
    assert versions == {
        "default-master": "v1.37.0",
        "default-worker": "v1.37.0",
        "gpu-a100": "v1.37.0",
    }
    assert p.plan(env).is_noop


def test_delete_removes_cluster_and_its_control_plane(emulator: Emulator, env_dir: Path) -> None:
    env = environment(env_dir)
    p = provider(emulator, env)
    raw = p.client.find_cluster(env.cluster_name)
    assert raw is not None
    state_dir = emulator.config.state_dir / "clusters" / str(raw["uuid"])
    assert state_dir.exists()
    assert p.delete(env) is True
    assert p.client.find_cluster(env.cluster_name) is None
    assert not state_dir.exists()
    assert p.delete(env) is False


def test_cluster_deleted_while_creating_leaves_no_control_plane(
    emulator: Emulator, env_dir: Path
) -> None:
    env = environment(env_dir)
    p = provider(emulator, env)
    templates = p.client.templates_named("kubernetes-1.36-cern")
    uuid = p.client.create_cluster(
        {"name": "short-lived", "cluster_template_id": templates[0]["uuid"], "node_count": 1}
    )
    p.client.delete_cluster(uuid)  # a rollback after a timeout looks like this
    state_dir = emulator.config.state_dir / "clusters" / uuid
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if p.client.get_cluster_or_none(uuid) is None and not state_dir.exists():
            break
        time.sleep(0.5)
    time.sleep(3)  # the create thread must not bring it back
    assert p.client.get_cluster_or_none(uuid) is None
    assert not state_dir.exists()


def test_report_timings() -> None:
    # Not an assertion on speed (shared CI machines vary); printed for the record with -s/-rA.
    print(
        f"provision (template + cluster + GPU nodegroup, real control plane): "
        f"{TIMINGS.get('provision', float('nan')):.1f}s"
    )
