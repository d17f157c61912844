"""The whole 26.03 platform on a fresh local control plane: one run converges, a re-apply sends
no PATCH, kubectl understands the ApplySet, and a conflict with another manager is reported.

The tests share one fresh cluster and run in file order: each starts from the converged state the
previous one left (a full apply costs minutes on two cores; doing it per test would not pay).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apply_support import assert_converged, env_file, fault_proxy, fresh_cluster_fixture, platform

from kfdeploy.cluster.apply import ApplyFailed
from kfdeploy.cluster.client import Kube, connect
from kfdeploy.cluster.inventory import ApplySet
from kfdeploy.render.objects import RenderedObject
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.workflows.apply import ApplyOptions, apply_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KUBECTL = Path(sys.prefix) / "bin" / "kubectl"
APPLYSET = ApplySet.for_environment("local")


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    yield from fresh_cluster_fixture(request, tmp_path_factory, "apply-platform")


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[RenderedObject]:
    return platform("26.03", tmp_path_factory.mktemp("env-2603"))


@pytest.fixture(scope="module")
def kube(cluster: LocalCluster) -> Kube:
    return connect(cluster.kubeconfig_path)


def kubectl(
    cluster: LocalCluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig_path), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
        env={**os.environ, "KUBECTL_APPLYSET": "true"},
    )


def test_platform_applies_in_one_run_and_converges(
    cluster: LocalCluster, objects: list[RenderedObject], kube: Kube, tmp_path: Path
) -> None:
    assert len(objects) > 600
    with fault_proxy(cluster) as proxy:
        summary = apply_objects(
            connect(proxy.kubeconfig(tmp_path / "kc")),
            objects,
            APPLYSET,
            options=ApplyOptions(timeout=900),
        )
    assert not summary.failed
    # One run, and never because of order: no request met a missing kind or a webhook that was
    # not serving. (A busy two-core API server may still answer a rare 429/5xx, which is retried.)
    for line in summary.retried:
        assert "no matches for kind" not in line and "failed calling webhook" not in line, line
    # A CRD established a moment ago answers LISTs with 429 "storage is (re)initializing" until
    # its watch cache is ready: the API server's documented temporary state, retried as it should
    # be, and on a loaded two-core machine it can hit several fresh CRDs. Anything else is rare.
    other = [line for line in summary.retried if "storage is (re)initializing" not in line]
    assert len(other) <= 3, summary.retried
    totals = summary.totals()
    assert totals["created"] + totals["configured"] == len(objects), totals
    assert proxy.requests["PATCH"] == len(objects) + 1  # each object once, plus the ApplySet parent
    assert_converged(kube, objects)


def test_reapply_sends_no_patch_and_reports_all_unchanged(
    cluster: LocalCluster, objects: list[RenderedObject], tmp_path: Path
) -> None:
    with fault_proxy(cluster) as proxy:
        summary = apply_objects(
            connect(proxy.kubeconfig(tmp_path / "kc")),
            objects,
            APPLYSET,
            options=ApplyOptions(timeout=300),
        )
    assert dict(summary.totals()) == {"unchanged": len(objects)}
    assert proxy.requests["PATCH"] == 0 and proxy.requests["DELETE"] == 0, proxy.requests
    assert summary.requests["PATCH"] == 0
    assert not summary.prune.delete


def test_kubectl_understands_the_applyset(
    cluster: LocalCluster, objects: list[RenderedObject], kube: Kube
) -> None:
    parent = json.loads(
        kubectl(cluster, "get", "secret", "-n", "kube-system", APPLYSET.name, "-o", "json").stdout
    )
    assert parent["metadata"]["labels"]["applyset.kubernetes.io/id"] == APPLYSET.id
    deployments = kubectl(
        cluster,
        "get",
        "deployments",
        "-A",
        "-l",
        f"applyset.kubernetes.io/part-of={APPLYSET.id}",
        "-o",
        "name",
    ).stdout.split()
    assert len(deployments) == sum(1 for o in objects if o.kind == "Deployment")
    # kubectl reads the parent, recognises its ID and tooling, and refuses to take it over:
    # proof that it parses kfdeploy's ApplySet as its own format.
    cm = next(o for o in objects if o.kind == "ConfigMap")
    manifest = json.dumps(cm.obj)
    proc = subprocess.run(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(cluster.kubeconfig_path),
            "apply",
            "--server-side",
            "--dry-run=server",
            "--prune",
            f"--applyset=secrets/{APPLYSET.name}",
            "-n",
            "kube-system",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECTL_APPLYSET": "true"},
    )
    assert proc.returncode != 0
    assert 'tooling "kfdeploy"' in proc.stderr, proc.stderr
    # And kubectl computes the same ID: a parent written by kfdeploy's code, handed to kubectl's
    # tooling, is accepted; with a wrong ID label it is refused.
    probe = ApplySet("kfdeploy-id-probe")
    probe.write(kube, [("", "ConfigMap")], [])
    kube.request(
        "PATCH",
        probe.path,
        content_type="application/merge-patch+json",
        body={"metadata": {"annotations": {"applyset.kubernetes.io/tooling": "kubectl/v1.37.0"}}},
    )
    ok = subprocess.run(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(cluster.kubeconfig_path),
            "apply",
            "--server-side",
            "--dry-run=server",
            "--prune",
            f"--applyset=secrets/{probe.name}",
            "-n",
            "kube-system",
            "-f",
            "-",
        ],
        input=json.dumps({**cm.obj, "metadata": {"name": "probe", "namespace": "kube-system"}}),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECTL_APPLYSET": "true"},
    )
    assert ok.returncode == 0, ok.stderr
    kube.request("DELETE", probe.path)


def test_conflict_with_another_manager_is_reported_not_overwritten(
    cluster: LocalCluster, objects: list[RenderedObject], kube: Kube
) -> None:
    target = next(
        o
        for o in objects
        if o.kind == "ConfigMap" and o.namespace == "kubeflow" and o.obj.get("data")
    )
    field = sorted(target.obj["data"])[0]
    path = f"/api/v1/namespaces/kubeflow/configmaps/{target.name}"
    intruder = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": target.name, "namespace": "kubeflow"},
        "data": {field: "set-by-intruder"},
    }
    proc = subprocess.run(
        [
            str(KUBECTL),
            "--kubeconfig",
            str(cluster.kubeconfig_path),
            "apply",
            "--server-side",
            "--field-manager=intruder",
            "--force-conflicts",
            "-f",
            "-",
        ],
        input=json.dumps(intruder),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "serverside-applied" in proc.stdout

    with pytest.raises(ApplyFailed) as info:
        apply_objects(kube, objects, APPLYSET, options=ApplyOptions(timeout=300))
    bad = info.value.outcomes
    assert [(o.key.name, o.action) for o in bad] == [(target.name, "conflict")]
    assert "intruder" in bad[0].message and f".data.{field}" in bad[0].message
    assert bad[0].component == target.component
    assert kube.get(path)["data"][field] == "set-by-intruder"  # not overwritten

    # Only the explicit flag takes the field back.
    summary = apply_objects(
        kube, objects, APPLYSET, options=ApplyOptions(timeout=300, force_conflicts=True)
    )
    assert summary.totals()["configured"] == 1 and not summary.failed
    assert kube.get(path)["data"][field] == target.obj["data"][field]


def test_cli_diff_and_apply_agree_with_the_cluster(
    cluster: LocalCluster, objects: list[RenderedObject], kube: Kube, tmp_path: Path
) -> None:
    env = str(env_file("26.03", tmp_path / "env"))
    cli = str(Path(sys.prefix) / "bin" / "kfdeploy")
    kc = ["--kubeconfig", str(cluster.kubeconfig_path)]
    run: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 600}
    same = subprocess.run([cli, "diff", env, *kc], **run)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no changes" in same.stdout

    # Someone deletes an object kfdeploy manages: diff shows it, apply puts it back.
    cm = next(o for o in objects if o.kind == "ConfigMap" and o.namespace == "kubeflow")
    kube.request("DELETE", f"/api/v1/namespaces/kubeflow/configmaps/{cm.name}")
    changed = subprocess.run([cli, "diff", env, *kc], **run)
    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert f"create ConfigMap kubeflow/{cm.name}" in changed.stdout

    applied = subprocess.run([cli, "apply", env, *kc, "--output", "json"], **run)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    result = json.loads(applied.stdout)
    assert result["totals"] == {"created": 1, "unchanged": len(objects) - 1}
    # the ConfigMap, plus (first CLI apply on this cluster) the environment's ownership claim
    assert result["requests"].get("PATCH", 0) - result["retries"] <= 2, result
    again = subprocess.run([cli, "apply", env, *kc, "--output", "json"], **run)
    assert again.returncode == 0, again.stdout + again.stderr
    result = json.loads(again.stdout)
    assert result["totals"] == {"unchanged": len(objects)}
    assert "PATCH" not in result["requests"], result["requests"]

    missing = subprocess.run([cli, "diff", env, "--kubeconfig", str(tmp_path / "missing")], **run)
    assert missing.returncode == 1
