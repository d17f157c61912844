"""The emulator daemon `kfdeploy cluster ... local` relies on: started once, found again, and
serving the clouds.yaml it wrote; `python -m kfdeploy.sim.magnum` manages it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from kfdeploy.sim.magnum.config import LOCAL_CLOUD
from kfdeploy.sim.magnum.daemon import ensure_emulator, running_url, stop_emulator

pytestmark = pytest.mark.integration


def test_ensure_emulator_starts_once_and_is_found_again(tmp_path: Path) -> None:
    state = tmp_path / "emu"
    state.mkdir()
    (state / "config.yaml").write_text("backend: fake\ndelays: {cluster_create: 0.5}\n")
    try:
        clouds = ensure_emulator(state)
        info = json.loads((state / "emulator.json").read_text())
        assert ensure_emulator(state) == clouds
        assert json.loads((state / "emulator.json").read_text())["pid"] == info["pid"]
        cloud = yaml.safe_load(clouds.read_text())["clouds"][LOCAL_CLOUD]
        assert cloud["auth"]["auth_url"].startswith("http://127.0.0.1:")
        assert (clouds.stat().st_mode & 0o777) == 0o600
        assert requests.get(cloud["auth"]["auth_url"], timeout=5).json()["version"]["id"] == (
            "v3.14"
        )
        status = subprocess.run(
            [sys.executable, "-m", "kfdeploy.sim.magnum", "status", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(status.stdout)["running"] is True
    finally:
        assert stop_emulator(state, destroy=True) is True
    assert running_url(state) is None
    assert stop_emulator(state) is False


def test_cluster_apply_local_just_works(tmp_path: Path) -> None:
    """`kfdeploy cluster apply local`: starts the emulator daemon itself, provisions a real local
    control plane shaped like environments/local.yaml, and the kubeconfig it writes works."""
    import os

    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from kfdeploy.errors import KfdeployError
    from kfdeploy.sim import binaries
    from kfdeploy.sim.magnum.testing import FAST_ENV

    try:
        binaries.require()
    except KfdeployError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the simulated control plane is unavailable: {exc}")
        pytest.skip(f"simulated control plane unavailable: {exc}")
    state = tmp_path / "emu"
    state.mkdir()
    (state / "config.yaml").write_text(
        "delays: {cluster_create: 1, nodegroup_create: 0.5, resize: 0.5, cluster_delete: 0.5}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OS_CLIENT_CONFIG_FILE", "OS_CLOUD")}
    env.update(FAST_ENV, KFDEPLOY_MAGNUM_EMULATOR_DIR=str(state))
    kubeconfig = tmp_path / "local.kubeconfig"

    def kfd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from kfdeploy.cli import main; main()", "cluster", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    try:
        applied = kfd("apply", "local", "--kubeconfig-out", str(kubeconfig))
        assert applied.returncode == 0, applied.stderr
        assert running_url(state) is not None
        api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
        nodes: list[Any] = k8s.CoreV1Api(api).list_node(_request_timeout=15).items
        api.close()
        gpus = [n for n in nodes if n.status.capacity.get("nvidia.com/gpu") == "2"]
        assert len(gpus) == 2
        assert all(n.metadata.labels["magnum.openstack.org/nodegroup"] == "gpu-a100" for n in gpus)
        again = kfd("apply", "local")
        assert again.returncode == 0 and "nothing to do" in again.stdout
        deleted = kfd("delete", "local", "--yes")
        assert deleted.returncode == 0, deleted.stderr
    finally:
        stop_emulator(state, destroy=True)
