"""`kfdeploy sim` lifecycle on its own cluster: start, status, reuse, stop, restart, destroy.

Uses a second control plane (own state directory and namespace) so stopping it does not disturb
the session cluster the other tests share.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from typer.testing import CliRunner

from kfdeploy.cli.sim import app
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.sim.nodes import SimNode
from kfdeploy.sim.pki import make_csr
from kfdeploy.sim.testing import keep_logs, require_binaries, unavailable, wait_for

pytestmark = pytest.mark.integration

NODES_YAML = """\
nodes:
- name: lc-cpu-0
  labels: {magnum.openstack.org/nodegroup: default-worker, magnum.openstack.org/role: worker}
- name: lc-gpu-0
  gpus: 1
  labels: {magnum.openstack.org/nodegroup: gpu}
  taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
"""


@pytest.fixture(scope="module")
def lifecycle_dir(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Path]:
    require_binaries()
    state = tmp_path_factory.mktemp("sim-lifecycle")
    yield state
    cluster = LocalCluster(state, name="lifecycle")
    if request.session.testsfailed:
        keep_logs(cluster)
    cluster.destroy()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _api(cluster: LocalCluster) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig_path))


def test_cli_start_status_restart_keeps_objects(
    lifecycle_dir: Path, record_property: pytest.RecordProperty
) -> None:
    nodes_file = lifecycle_dir.parent / "lifecycle-nodes.yaml"
    nodes_file.write_text(NODES_YAML)
    common = ["--name", "lifecycle", "--state-dir", str(lifecycle_dir)]
    started = time.monotonic()
    try:
        _cli("start", *common, "--nodes", str(nodes_file))
    except AssertionError as exc:
        keep_logs(LocalCluster(lifecycle_dir, name="lifecycle"))
        unavailable(f"`kfdeploy sim start` failed: {exc}")
    first_start = time.monotonic() - started
    cluster = LocalCluster(lifecycle_dir, name="lifecycle")

    kubeconfig = Path(_cli("kubeconfig", *common).strip())
    assert kubeconfig == cluster.kubeconfig_path
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600

    info = json.loads(_cli("status", *common, "--output", "json"))
    assert info["running"] is True
    assert info["api_url"].startswith("https://127.0.0.1:")
    assert info["versions"]["server"] == info["versions"]["kubernetes"]
    assert {n["name"] for n in info["nodes"]} == {"lc-cpu-0", "lc-gpu-0"}
    assert all(n["ready"] for n in info["nodes"])
    rss = info["rss_bytes_total"]
    record_property("sim_first_start_seconds", round(first_start, 1))
    record_property("sim_rss_mib", round(rss / 2**20))

    core = k8s.CoreV1Api(_api(cluster))
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="keep-me")))
    core.create_namespaced_config_map("keep-me", {"metadata": {"name": "cm"}, "data": {"v": "1"}})

    # start on a running cluster is a no-op that reuses the processes
    pids = {c: v["pid"] for c, v in info["components"].items()}
    cluster.start(
        [SimNode.from_dict(n) for n in [{"name": "lc-cpu-0"}, {"name": "lc-gpu-0", "gpus": 1}]]
    )
    assert {c: v["pid"] for c, v in cluster.status()["components"].items()} == pids

    _cli("stop", *common)
    assert not cluster.is_running()
    assert all(not v["running"] for v in cluster.status()["components"].values())

    started = time.monotonic()
    _cli("start", *common, "--nodes", str(nodes_file))
    warm_start = time.monotonic() - started
    record_property("sim_warm_start_seconds", round(warm_start, 1))
    print(
        f"\nsim first start {first_start:.1f}s, warm restart {warm_start:.1f}s, "
        f"RSS {rss / 2**20:.0f} MiB"
    )

    core = k8s.CoreV1Api(_api(cluster))
    assert core.read_namespaced_config_map("cm", "keep-me").data == {"v": "1"}
    wait_for(
        "nodes Ready after restart",
        lambda: all(
            any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
            for n in core.list_node().items
        ),
        timeout=30,
    )


def test_set_nodes_adds_and_removes(lifecycle_dir: Path) -> None:
    cluster = LocalCluster(lifecycle_dir, name="lifecycle")
    if not cluster.is_running():
        pytest.skip("lifecycle cluster not running (previous test failed)")
    cluster.set_nodes(
        [
            SimNode(name="lc-cpu-0", labels={"magnum.openstack.org/nodegroup": "default-worker"}),
            SimNode(name="lc-big-0", cpu="64", memory="512Gi", gpus=8),
        ]
    )
    core = k8s.CoreV1Api(_api(cluster))
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert set(nodes) == {"lc-cpu-0", "lc-big-0"}
    assert nodes["lc-big-0"].status.capacity["nvidia.com/gpu"] == "8"
    assert any(
        c.type == "Ready" and c.status == "True" for c in nodes["lc-big-0"].status.conditions
    )


def test_signed_csr_authenticates_as_its_subject(lifecycle_dir: Path, tmp_path: Path) -> None:
    cluster = LocalCluster(lifecycle_dir, name="lifecycle")
    if not cluster.is_running():
        pytest.skip("lifecycle cluster not running (previous test failed)")
    key_pem, csr_pem = make_csr("alice", ("kubeflow-admins",))
    cert_pem = cluster.sign_client_csr(csr_pem, days=1)
    (tmp_path / "ca.crt").write_bytes(cluster.ca_cert_pem)
    (tmp_path / "alice.crt").write_bytes(cert_pem)
    (tmp_path / "alice.key").write_bytes(key_pem)
    from kfdeploy.sim.kube import KubeClient

    alice = KubeClient(
        cluster.api_url, tmp_path / "ca.crt", tmp_path / "alice.crt", tmp_path / "alice.key"
    )
    review = alice.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    user = review["status"]["userInfo"]
    assert user["username"] == "alice"
    assert "kubeflow-admins" in user["groups"]


def test_destroy_removes_everything(tmp_path_factory: pytest.TempPathFactory) -> None:
    state = tmp_path_factory.mktemp("sim-destroy")
    cluster = LocalCluster(state, name="destroy")
    try:
        cluster.start([SimNode(name="only")], timeout=180)
    except Exception as exc:
        keep_logs(cluster)
        cluster.destroy()
        unavailable(f"start failed: {exc}")
    ns_path = cluster.netns_path
    cluster.destroy()
    assert not state.exists()
    assert ns_path is None or not ns_path.exists()
