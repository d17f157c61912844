"""Helpers for tests that need the simulated control plane (used by tests/integration).

Kept in the package rather than in a conftest so every test module (and the Magnum emulator's
tests) can import them. Importing this module needs pytest, so only tests import it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

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
kept_logs: list[Path] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
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
    kept_logs.append(target)
    return target


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
        except Exception as exc:  # e.g. kubernetes ApiException while an object is not there yet
            last_error = exc
        time.sleep(interval)
    pytest.fail(
        f"timed out after {timeout}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )
