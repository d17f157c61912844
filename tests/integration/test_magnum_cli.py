"""`kfdeploy cluster ...` as a user runs it (a subprocess: real exit codes and one-line errors),
against the in-process emulator with injected faults. The emulator's "fake" backend is enough
here: these tests are about the cloud's answers, not the clusters' nodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kfdeploy.sim.magnum.config import LOCAL_CLOUD
from kfdeploy.sim.magnum.server import Emulator, running
from kfdeploy.sim.magnum.testing import (
    cli_env,
    fast_config,
    mutating_requests,
    staging_environment,
    write_environment,
)

pytestmark = pytest.mark.integration

MAIN = "from kfdeploy.cli import main; main()"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with running(fast_config(tmp_path_factory.mktemp("magnum-cli"))) as em:
        em.write_clouds_yaml(em.config.state_dir / "clouds.yaml")
        yield em


@pytest.fixture(autouse=True)
def _clear_faults(emulator: Emulator) -> Iterator[None]:
    emulator.faults.update({"reset": True})
    yield
    emulator.faults.update({"reset": True})


def env_file(tmp_path: Path, **cluster: Any) -> tuple[Path, str, str]:
    """A staging-shaped environment with its own cluster and template names."""
    suffix = uuid.uuid4().hex[:6]
    name, template = f"stg-{suffix}", f"tmpl-{suffix}"
    data = staging_environment(LOCAL_CLOUD, name=name, **cluster)
    data["cluster"]["template"]["name"] = template
    return write_environment(tmp_path, f"env-{suffix}", data), name, template


def kfd(em: Emulator, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(em.config.state_dir / "clouds.yaml", KFDEPLOY_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-c", MAIN, "cluster", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # OS_CLIENT_CONFIG_FILE defines kfdeploy-local: the CLI must use it, not start a daemon.
    assert not (tmp_path / "cache" / "magnum-emulator").exists()
    return result


def clusters_named(em: Emulator, name: str) -> list[dict[str, Any]]:
    with em.state.lock:
        return [c for c in em.state.clusters.values() if c["name"] == name]


def templates_named(em: Emulator, name: str) -> list[dict[str, Any]]:
    with em.state.lock:
        return [t for t in em.state.templates.values() if t["name"] == name]


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_apply_is_idempotent_and_every_command_works(emulator: Emulator, tmp_path: Path) -> None:
    path, name, _ = env_file(tmp_path)
    first = kfd(emulator, tmp_path, "apply", str(path))
    assert first.returncode == 0, first.stderr
    assert "+ create-nodegroup nodegroup gpu-a100: 2 x g1.a100.x2" in first.stdout
    assert "applied 3 change(s)" in first.stdout

    emulator.reset_requests()
    second = kfd(emulator, tmp_path, "apply", str(path))
    assert second.returncode == 0, second.stderr
    assert "no changes" in second.stdout and "nothing to do" in second.stdout
    assert mutating_requests(emulator) == []

    plan = json.loads(kfd(emulator, tmp_path, "plan", str(path), "-o", "json").stdout)
    assert plan["noop"] is True and plan["cluster"] == name
    status = json.loads(kfd(emulator, tmp_path, "status", str(path), "-o", "json").stdout)
    assert {g["name"]: g["node_count"] for g in status["nodegroups"]}["gpu-a100"] == 2

    out = tmp_path / "kc.yaml"
    kc = kfd(emulator, tmp_path, "kubeconfig", str(path), "-f", str(out))
    assert kc.returncode == 0 and kc.stdout.strip() == str(out)
    assert "BEGIN" not in kc.stdout + kc.stderr
    assert (out.stat().st_mode & 0o777) == 0o600

    refused = kfd(emulator, tmp_path, "delete", str(path))
    assert refused.returncode == 2 and "--yes" in error_line(refused)
    deleted = kfd(emulator, tmp_path, "delete", str(path), "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert clusters_named(emulator, name) == []


def test_failed_nodegroup_rolls_back_everything(emulator: Emulator, tmp_path: Path) -> None:
    path, name, template = env_file(tmp_path)
    emulator.faults.update(
        {
            "fail_nodegroups": {
                "gpu-a100": "No valid host was found. There are not enough hosts available."
            }
        }
    )
    result = kfd(emulator, tmp_path, "apply", str(path))
    assert result.returncode == 3
    line = error_line(result)
    assert f"nodegroup gpu-a100 of cluster {name} is CREATE_FAILED" in line
    assert "No valid host was found" in line
    assert f"rolled back: cluster {name}, template {template}" in line
    assert clusters_named(emulator, name) == []
    assert templates_named(emulator, template) == []


def test_keep_failed_keeps_it_and_the_next_apply_replaces_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    path, _, _ = env_file(tmp_path)
    emulator.faults.update({"fail_nodegroups": {"gpu-a100": "Quota exceeded for cores"}})
    result = kfd(emulator, tmp_path, "apply", str(path), "--keep-failed")
    assert result.returncode == 3
    assert "kept for inspection (--keep-failed)" in error_line(result)
    status = kfd(emulator, tmp_path, "status", str(path))
    assert "gpu-a100" in status.stdout and "CREATE_FAILED - Quota exceeded for cores" in (
        status.stdout
    )
    assert "fault gpu-a100: Quota exceeded for cores" in status.stdout

    emulator.faults.update({"reset": True})
    fixed = kfd(emulator, tmp_path, "apply", str(path), "--yes")
    assert fixed.returncode == 0, fixed.stderr
    assert "delete-nodegroup nodegroup gpu-a100: replace: it is CREATE_FAILED" in fixed.stdout
    assert json.loads(kfd(emulator, tmp_path, "plan", str(path), "-o", "json").stdout)["noop"]
    assert kfd(emulator, tmp_path, "delete", str(path), "--yes").returncode == 0


def test_failed_cluster_reports_reason_and_faults(emulator: Emulator, tmp_path: Path) -> None:
    path, name, template = env_file(tmp_path)
    emulator.faults.update({"fail_clusters": {name: "Resource CREATE failed: Timeout"}})
    result = kfd(emulator, tmp_path, "apply", str(path))
    assert result.returncode == 3
    line = error_line(result)
    assert f"cluster {name} is CREATE_FAILED" in line
    assert "faults: default-master: Resource CREATE failed: Timeout" in line
    assert "rolled back" in line
    assert clusters_named(emulator, name) == [] and templates_named(emulator, template) == []


def test_quota_exceeded(emulator: Emulator, tmp_path: Path) -> None:
    path, _, template = env_file(tmp_path)
    emulator.faults.update({"cluster_quota": 0})
    result = kfd(emulator, tmp_path, "apply", str(path))
    assert result.returncode == 3
    line = error_line(result)
    assert "quota exceeded" in line and "maximum clusters per project" in line
    assert f"rolled back: template {template}" in line
    assert "hint: delete unused clusters" in result.stderr
    assert templates_named(emulator, template) == []


def test_5xx_bursts_are_retried_then_reported(emulator: Emulator, tmp_path: Path) -> None:
    path, _, _ = env_file(tmp_path)
    emulator.faults.update(
        {"http_errors": [{"status": 503, "count": 3, "path_contains": "/v1/clusters"}]}
    )
    ok = kfd(emulator, tmp_path, "plan", str(path))
    assert ok.returncode == 0, ok.stderr
    emulator.faults.update(
        {"http_errors": [{"status": 502, "count": 100, "path_contains": "/v1/clustertemplates"}]}
    )
    failed = kfd(emulator, tmp_path, "plan", str(path))
    assert failed.returncode == 3
    assert "list cluster templates: Magnum answered 502" in error_line(failed)


def test_token_expiry_mid_apply_reauthenticates(emulator: Emulator, tmp_path: Path) -> None:
    path, _, _ = env_file(tmp_path)
    emulator.faults.update({"revoke_tokens_every": 7})
    emulator.reset_requests()
    result = kfd(emulator, tmp_path, "apply", str(path))
    assert result.returncode == 0, result.stderr
    auths = sum(
        r["count"]
        for r in emulator.requests()
        if r["path"] == "/identity/v3/auth/tokens" and r["method"] == "POST"
    )
    assert auths >= 3
    emulator.faults.update({"reset": True})
    assert kfd(emulator, tmp_path, "delete", str(path), "--yes").returncode == 0


def test_microversion_unsupported_is_explained(tmp_path: Path) -> None:
    with running(fast_config(tmp_path / "old", max_version="1.8")) as old:
        old.write_clouds_yaml(old.config.state_dir / "clouds.yaml")
        path, _, _ = env_file(tmp_path)
        result = kfd(old, tmp_path, "plan", str(path))
    assert result.returncode == 3
    line = error_line(result)
    assert "refused the API microversion" in line and "[1.1, 1.8]" in line
    assert "needs Magnum API 1.10" in result.stderr


def test_unknown_cloud_is_a_config_error(emulator: Emulator, tmp_path: Path) -> None:
    path, _, _ = env_file(tmp_path)
    path.write_text(path.read_text().replace(f"cloud: {LOCAL_CLOUD}", "cloud: no-such-cloud"))
    result = kfd(emulator, tmp_path, "plan", str(path))
    assert result.returncode == 2
    assert "no-such-cloud" in error_line(result)


def test_the_real_cern_staging_environment_runs_against_the_emulator(
    emulator: Emulator, tmp_path: Path
) -> None:
    """environments/cern-staging.yaml, only pointed at another cloud: no code change needed."""
    from kfdeploy.config.load import default_environments_dir

    staging = (default_environments_dir() / "cern-staging.yaml").resolve()
    path = tmp_path / "staging-on-emulator.yaml"
    path.write_text(f"extends: {staging}\ncluster:\n  cloud: {LOCAL_CLOUD}\n")
    applied = kfd(emulator, tmp_path, "apply", str(path))
    assert applied.returncode == 0, applied.stderr
    assert "+ create-nodegroup nodegroup gpu-t4: 1 x g2.xlarge" in applied.stdout
    status = json.loads(kfd(emulator, tmp_path, "status", str(path), "-o", "json").stdout)
    assert status["name"] == "kubeflow-staging"
    assert {g["name"]: g["node_count"] for g in status["nodegroups"]} == {
        "default-master": 3,
        "default-worker": 3,
        "gpu-t4": 1,
    }
    assert kfd(emulator, tmp_path, "delete", str(path), "--yes").returncode == 0
