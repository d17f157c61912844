"""Faults: kfdeploy killed mid-apply, then re-run through a proxy that fails ~10% of requests with
429, 503 and connection resets, converges to exactly the rendered state."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apply_support import assert_converged, env_file, fault_proxy, fresh_cluster_fixture, platform

from kfdeploy.cluster.client import connect
from kfdeploy.cluster.inventory import PART_OF_LABEL, ApplySet
from kfdeploy.render.objects import RenderedObject
from kfdeploy.sim.cluster import LocalCluster
from kfdeploy.workflows.apply import ApplyOptions, apply_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPLYSET = ApplySet.for_environment("local")


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    yield from fresh_cluster_fixture(request, tmp_path_factory, "apply-faults")


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[RenderedObject]:
    return platform("26.03", tmp_path_factory.mktemp("env-2603"))


def test_killed_apply_then_faulty_api_still_converges(
    cluster: LocalCluster, objects: list[RenderedObject], tmp_path: Path
) -> None:
    kube = connect(cluster.kubeconfig_path)
    env = env_file("26.03", tmp_path / "env")
    cli = Path(sys.prefix) / "bin" / "kfdeploy"
    proc = subprocess.Popen(
        [str(cli), "apply", str(env), "--kubeconfig", str(cluster.kubeconfig_path), "-o", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it in phase 2: CRDs are in, part of the RBAC is, nothing of phase 5 yet.
    deadline = time.monotonic() + 600
    applied = 0
    while time.monotonic() < deadline and proc.poll() is None:
        roles = kube.get(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            query=[("labelSelector", f"{PART_OF_LABEL}={APPLYSET.id}")],
        )["items"]
        applied = len(roles)
        if applied >= 10:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "apply finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert applied >= 10
    deployments = kube.get(
        "/apis/apps/v1/deployments", query=[("labelSelector", f"{PART_OF_LABEL}={APPLYSET.id}")]
    )["items"]
    assert len(deployments) < sum(1 for o in objects if o.kind == "Deployment")  # mid-run indeed

    with fault_proxy(cluster, fault_rate=0.10) as proxy:
        summary = apply_objects(
            connect(proxy.kubeconfig(tmp_path / "kc")),
            objects,
            APPLYSET,
            options=ApplyOptions(timeout=900),
        )
    assert not summary.failed, summary.failed
    faults = sum(proxy.faults.values())
    assert faults >= 0.05 * sum(proxy.requests.values()), (proxy.faults, proxy.requests)
    assert {"429", "503", "reset-before", "reset-after"} <= set(proxy.faults), proxy.faults
    assert summary.retries >= faults * 0.5  # every fault kfdeploy met was retried, not fatal
    totals = summary.totals()
    assert totals["unchanged"] >= applied  # what the killed run applied is not sent again
    assert_converged(kube, objects)
