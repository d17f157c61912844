"""Fixtures for tests against the real local control plane (kfdeploy.sim).

One control plane per test session (starting one costs seconds, a namespace costs milliseconds),
a fresh namespace per test. Without the binaries the tests are skipped with the reason, except
under CI=true, where a missing binary or a failed start fails them: CI must never pass by
skipping. Component logs of a session with failures are kept and their path printed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.sim.testing import SESSION_NODES, keep_logs, kept_logs, start_cluster, wait_for


@pytest.fixture(scope="session")
def sim_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("sim-session"), SESSION_NODES)
    yield cluster
    if request.session.testsfailed:
        keep_logs(cluster)
    cluster.destroy()


@pytest.fixture(scope="session")
def api(sim_cluster: LocalCluster) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(sim_cluster.kubeconfig_path))


@pytest.fixture
def namespace(api: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists)."""
    core = k8s.CoreV1Api(api)
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    # Pods are refused until the service-account controller created `default`.
    wait_for(
        f"ServiceAccount {name}/default",
        lambda: core.read_namespaced_service_account("default", name),
        30,
    )
    yield name
    try:
        core.delete_namespace(name)
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for path in kept_logs:
        terminalreporter.write_line(f"simulated control plane logs kept in {path}")
        if os.environ.get("CI", "").lower() != "true":
            continue
        # CI keeps only its console output: show the end of every component's log there.
        for log_file in sorted(path.glob("*.log")):
            lines = log_file.read_text(errors="replace").splitlines()[-15:]
            terminalreporter.write_line(f"--- {log_file.name} (last {len(lines)} lines) ---")
            for line in lines:
                terminalreporter.write_line(line[:300])
