"""`kfdeploy sim` commands that need no running control plane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kfdeploy.cli.sim import app
from kfdeploy.sim import binaries
from kfdeploy.sim.errors import SimBuildError, SimNotRunning


def _fake_bins(directory: Path, names: list[str]) -> None:
    directory.mkdir(parents=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\necho 'Kubernetes v1.36.3'\n")
        path.chmod(0o755)


def test_build_is_a_no_op_when_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFDEPLOY_CACHE", str(tmp_path))
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    _fake_bins(binaries.kube_dir() / "bin", list(binaries.KUBE_COMMANDS))
    _fake_bins(binaries.etcd_dir() / "bin", ["etcd"])
    result = CliRunner().invoke(app, ["build"])
    assert result.exit_code == 0, result.output
    assert f"kube-apiserver: {binaries.kube_dir() / 'bin' / 'kube-apiserver'}" in result.output


def test_start_without_binaries_explains_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFDEPLOY_CACHE", str(tmp_path))
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    result = CliRunner().invoke(app, ["start", "--state-dir", str(tmp_path / "s")])
    assert isinstance(result.exception, SimBuildError)
    assert result.exception.hint and "kfdeploy sim build" in result.exception.hint


def test_status_of_a_cluster_that_never_ran(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["status", "--state-dir", str(tmp_path / "none"), "-o", "json"]
    )
    assert result.exit_code == 3
    info = json.loads(result.output)
    assert info["running"] is False and info["api_url"] is None and info["nodes"] == []


def test_kubeconfig_of_a_stopped_cluster_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["kubeconfig", "--state-dir", str(tmp_path / "none")])
    assert isinstance(result.exception, SimNotRunning)
    assert result.exception.exit_code == 3
