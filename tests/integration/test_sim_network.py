"""The network rule: the control plane never sends traffic to a non-loopback address."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

from kfdeploy.sim import netns
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.sim.testing import unavailable, wait_for

pytestmark = pytest.mark.integration


def _netns_or_skip(cluster: LocalCluster) -> Path:
    path = cluster.netns_path
    if path is None:
        reason = f"cluster runs in the host namespace: {cluster.status()['network']['guarantee']}"
        if os.environ.get("KFDEPLOY_SIM_NETNS", "").lower() in ("0", "false", "no"):
            pytest.skip(reason)  # asked for explicitly
        unavailable(reason)  # CI runs as root: losing the namespace there is a failure
    return path


def _in_netns(path: Path, code: str) -> str:
    proc = subprocess.run(
        [*netns.nsenter_prefix(path), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    return proc.stdout.strip()


def test_namespace_has_only_loopback(sim_cluster: LocalCluster) -> None:
    path = _netns_or_skip(sim_cluster)
    state = sim_cluster.status()["network"]
    assert state["mode"] == "netns"
    assert state["interfaces"] == ["lo"]
    routes = subprocess.run(
        ["ip", "-n", path.name, "route", "show"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert routes.strip() == ""  # no default route, no route to any network


def test_cluster_ip_dial_fails_at_once_inside_the_namespace(sim_cluster: LocalCluster) -> None:
    path = _netns_or_skip(sim_cluster)
    code = (
        "import time; from kfdeploy.sim.netns import probe_unreachable as p\n"
        "for host in ('10.96.0.1', '10.244.0.5', '192.168.1.1', '8.8.8.8'):\n"
        "    t = time.monotonic(); e = p(host, 443); print(host, e, round(time.monotonic() - t, 3))"
    )
    for line in _in_netns(path, code).splitlines():
        _host, err, seconds = line.split()
        assert int(err) == errno.ENETUNREACH, line
        assert float(seconds) < 0.5, line  # refused by the kernel, not timed out on the wire


def test_components_listen_only_on_loopback(sim_cluster: LocalCluster) -> None:
    path = _netns_or_skip(sim_cluster)
    listening = subprocess.run(
        [*netns.nsenter_prefix(path), "ss", "-Hltn"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    local = [line.split()[3] for line in listening.splitlines() if line.strip()]
    assert local, "nothing listens in the namespace?"
    assert all(
        addr.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")) for addr in local
    ), local
    # On the host, the API server is reachable only through the forwarder on 127.0.0.1.
    assert sim_cluster.api_url.startswith("https://127.0.0.1:")
    host_ports = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    port = sim_cluster.api_url.rsplit(":", 1)[1]
    forwarder = [line.split()[3] for line in host_ports.splitlines() if f":{port} " in line + " "]
    assert forwarder == [f"127.0.0.1:{port}"]


def test_webhook_calls_fail_fast_and_never_leave_loopback(
    api: k8s.ApiClient, namespace: str, sim_cluster: LocalCluster
) -> None:
    """A webhook pointing at a Service (ClusterIP 10.x) is never reached, in either mode.

    kube-apiserver routes every cluster-network dial through the egress selector to a unix socket
    that refuses; inside the namespace the ClusterIP is unreachable besides.
    """
    core = k8s.CoreV1Api(api)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "hook"},
            "spec": {"ports": [{"port": 443}], "selector": {"app": "hook"}},
        },
    )
    name = f"{namespace}-deny"
    hook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deny.sim.kfdeploy.dev",
                "clientConfig": {
                    "service": {"name": "hook", "namespace": namespace, "path": "/validate"}
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
        ],
    }
    admission = k8s.AdmissionregistrationV1Api(api)
    admission.create_validating_webhook_configuration(hook)
    try:
        cm = {"metadata": {"name": "probe"}, "data": {"a": "b"}}

        def refused() -> str | None:
            started = time.monotonic()
            try:
                core.create_namespaced_config_map(namespace, cm)
            except k8s.ApiException as exc:
                if "failed calling webhook" in (exc.body or ""):
                    assert time.monotonic() - started < 5, "the webhook dial should fail at once"
                    return str(exc.body)
                raise
            core.delete_namespaced_config_map("probe", namespace)  # webhook not active yet
            return None

        body = wait_for("the webhook to be called and to fail", refused, timeout=30)
        # The dial went to the egress selector's refusing unix socket, never to an IP address.
        assert "egress-refused.sock" in body, body
    finally:
        admission.delete_validating_webhook_configuration(name)
