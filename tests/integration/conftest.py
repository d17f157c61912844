"""Fixtures for tests against the real local control plane (kfdeploy.sim).

One control plane per test session (starting one costs seconds, a namespace costs milliseconds),
a fresh namespace per test. Without the binaries the tests are skipped with the reason, except
under CI=true, where a missing binary or a failed start fails them: CI must never pass by
skipping. Component logs of a session with failures are kept and their path printed.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kfdeploy.errors import KfdeployError
from kfdeploy.sim import binaries
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.sim.nodes import GPU_RESOURCE, SimNode

MAGNUM = "magnum.openstack.org"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
SESSION_NODES = [
    SimNode(
        name="sim-cpu-0",
        labels={f"{MAGNUM}/nodegroup": "default-worker", f"{MAGNUM}/role": "worker"},
    ),
    SimNode(
        name="sim-cpu-1",
        labels={f"{MAGNUM}/nodegroup": "default-worker", f"{MAGNUM}/role": "worker"},
    ),
    SimNode(
        name="sim-gpu-0",
        gpus=2,
        labels={f"{MAGNUM}/nodegroup": "gpu", f"{MAGNUM}/role": "worker"},
        taints=(GPU_TAINT,),
    ),
]
_kept_logs: list[Path] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true where a missing control plane is a broken build."""
    if _in_ci():
        pytest.fail(
            f"CI=true and the simulated control plane is unavailable: {reason}", pytrace=False
        )
    pytest.skip(reason)


def require_binaries() -> binaries.Binaries:
    try:
        return binaries.require()
    except KfdeployError as exc:
        unavailable(f"{exc} ({exc.hint})" if exc.hint else str(exc))
        raise  # unreachable: unavailable() raises


def start_cluster(state_dir: Path, nodes: list[SimNode], name: str = "pytest-sim") -> LocalCluster:
    require_binaries()
    cluster = LocalCluster(state_dir, name=name)
    try:
        cluster.start(nodes, timeout=180)
    except KfdeployError as exc:
        keep_logs(cluster)
        unavailable(f"simulated control plane failed to start: {exc}")
    return cluster


def keep_logs(cluster: LocalCluster) -> Path | None:
    """Copy the component logs somewhere that outlives the session's cleanup."""
    target_root = Path(os.environ.get("KFDEPLOY_SIM_LOG_DIR") or Path.cwd() / ".sim-test-logs")
    target = target_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{cluster.name}"
    if not cluster.log_dir.exists():
        return None
    shutil.copytree(cluster.log_dir, target, dirs_exist_ok=True)
    _kept_logs.append(target)
    return target


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


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.5
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except k8s.ApiException as exc:
            last_error = exc
        time.sleep(interval)
    pytest.fail(
        f"timed out after {timeout}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


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
    for path in _kept_logs:
        terminalreporter.write_line(f"simulated control plane logs kept in {path}")
