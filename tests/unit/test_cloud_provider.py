"""Provider selection and the kubeconfig provider (an existing cluster kfdeploy does not own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kfdeploy.cloud import provider as provider_mod
from kfdeploy.cloud.kubeconfig_provider import KubeconfigProvider
from kfdeploy.cloud.magnum.provider import MagnumProvider
from kfdeploy.cloud.provider import get_provider
from kfdeploy.config.model import Environment
from kfdeploy.errors import GuardError


def environment(cluster: dict[str, Any]) -> Environment:
    return Environment.model_validate(
        {"name": "ext", "kubeflow": {"release": "26.03"}, "cluster": cluster}
    )


def test_kubeconfig_provider_never_changes_the_cluster(tmp_path: Path) -> None:
    source = tmp_path / "admin.conf"
    source.write_text("apiVersion: v1\nkind: Config\n")
    env = environment({"provider": "kubeconfig", "kubeconfig": str(source)})
    p = get_provider(env)
    assert isinstance(p, KubeconfigProvider)
    plan = p.plan(env)
    assert plan.is_noop and plan.exists
    assert not p.apply(plan).changed
    copy = p.kubeconfig(env, tmp_path / "out" / "kubeconfig")
    assert copy.read_text() == source.read_text()
    assert (copy.stat().st_mode & 0o777) == 0o600
    with pytest.raises(GuardError):
        p.delete(env)
    with pytest.raises(GuardError):
        p.resize(env, "default-worker", 3)


def test_kubeconfig_provider_reports_a_missing_file(tmp_path: Path) -> None:
    env = environment({"provider": "kubeconfig", "kubeconfig": str(tmp_path / "missing")})
    p = get_provider(env)
    assert not p.status(env).exists
    assert p.plan(env).notes


def magnum_env(cloud: str) -> Environment:
    return environment(
        {
            "provider": "magnum",
            "cloud": cloud,
            "template": {"name": "t"},
            "masters": {"flavor": "m"},
            "workers": {"name": "default-worker", "flavor": "w", "count": 1},
        }
    )


def test_other_clouds_never_start_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> Path:
        raise AssertionError("emulator started")

    monkeypatch.setattr("kfdeploy.sim.magnum.ensure_emulator", boom)
    p = get_provider(magnum_env("cern"))
    assert isinstance(p, MagnumProvider) and p.cloud == "cern" and p.clouds_file is None


def test_local_cloud_uses_a_defining_clouds_yaml_before_the_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[bool] = []

    def fake_emulator() -> Path:
        started.append(True)
        return tmp_path / "emu.yaml"

    monkeypatch.setattr("kfdeploy.sim.magnum.ensure_emulator", fake_emulator)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE", raising=False)
    if provider_mod._user_defines("kfdeploy-local"):
        pytest.skip("/etc/openstack/clouds.yaml defines kfdeploy-local on this machine")
    p = get_provider(magnum_env("kfdeploy-local"))
    assert started == [True] and p.clouds_file == tmp_path / "emu.yaml"  # type: ignore[attr-defined]

    own = tmp_path / "clouds.yaml"
    own.write_text("clouds:\n  kfdeploy-local:\n    auth: {auth_url: http://127.0.0.1:1/v3}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(own))
    p = get_provider(magnum_env("kfdeploy-local"))
    assert started == [True] and p.clouds_file is None  # type: ignore[attr-defined]
