"""`kfdeploy smoke`: options, exit codes and report files (the checks themselves are faked)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from checks_fakes import make_env
from typer.testing import CliRunner

from kfdeploy.checks.framework import CheckResult, SmokeReport, Status
from kfdeploy.cli import smoke as smoke_cli
from kfdeploy.errors import ConfigError
from kfdeploy.workflows import up as up_workflow

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)


def _app() -> typer.Typer:
    app = typer.Typer()
    smoke_cli.register(app)

    @app.callback()
    def _root() -> None:  # keeps `smoke` a named subcommand, as under the real root
        pass

    return app


def _fake(status: Status, seen: dict[str, Any]) -> Any:
    def run_smoke(env_name: str, **kwargs: Any) -> SmokeReport:
        seen.update(kwargs, env=env_name)
        result = CheckResult("crds-established", status, "why", 0.5, NOW)
        return SmokeReport(env_name, [result], NOW, 0.5)

    return run_smoke


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (Status.passed, 0),
        (Status.not_applicable, 0),
        (Status.failed, 1),
        (Status.error, 1),
    ],
)
def test_exit_code_follows_the_results(
    status: Status, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smoke_cli, "run_smoke", _fake(status, {}))
    result = CliRunner().invoke(_app(), ["smoke", "local"])
    assert result.exit_code == code, result.output
    assert "crds-established" in result.output


def test_options_reach_the_run_and_reports_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(smoke_cli, "run_smoke", _fake(Status.passed, seen))
    junit = tmp_path / "reports" / "smoke.xml"
    result = CliRunner().invoke(
        _app(),
        [
            "smoke",
            "cern-staging",
            "--kubeconfig",
            str(tmp_path / "kc"),
            "--context",
            "ctx",
            "--output",
            "json",
            "--junit",
            str(junit),
            "--check",
            "crds-established",
            "-c",
            "workloads-available",
            "--timeout",
            "30",
            "--manifests",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["checks"][0]["name"] == "crds-established"
    assert junit.read_text().startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites')
    assert seen == {
        "env": "cern-staging",
        "kubeconfig": tmp_path / "kc",
        "context": "ctx",
        "manifests": tmp_path,
        "only": ["crds-established", "workloads-available"],
        "timeout": 30,
    }


def test_resolve_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(cluster={"provider": "kubeconfig", "kubeconfig": "$KC_DIR/config"})
    monkeypatch.setenv("KC_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="no such kubeconfig file"):
        smoke_cli.resolve_kubeconfig(env)
    (tmp_path / "config").write_text("apiVersion: v1\n")
    (tmp_path / "other").write_text("apiVersion: v1\n")
    assert smoke_cli.resolve_kubeconfig(env) == tmp_path / "config"
    assert smoke_cli.resolve_kubeconfig(env, tmp_path / "other") == tmp_path / "other"
    magnum = make_env(
        cluster={
            "provider": "magnum",
            "kubeconfig": None,
            "template": {"name": "t"},
            "masters": {"flavor": "m"},
            "workers": {"name": "default-worker", "flavor": "w", "count": 1},
        }
    )
    with pytest.raises(ConfigError, match="no kubeconfig for environment unit"):
        smoke_cli.resolve_kubeconfig(magnum)


def test_magnum_environment_uses_the_kubeconfig_up_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    magnum = make_env(
        cluster={
            "provider": "magnum",
            "kubeconfig": None,
            "template": {"name": "t"},
            "masters": {"flavor": "m"},
            "workers": {"name": "default-worker", "flavor": "w", "count": 1},
        }
    )
    saved = tmp_path / "unit.yaml"
    monkeypatch.setattr(up_workflow, "kubeconfig_path", lambda env: saved)
    with pytest.raises(ConfigError, match="no kubeconfig for environment unit") as info:
        smoke_cli.resolve_kubeconfig(magnum)
    assert info.value.hint == "run `kfdeploy up unit` first, or pass --kubeconfig FILE"
    saved.write_text("apiVersion: v1\n")
    assert smoke_cli.resolve_kubeconfig(magnum) == saved
