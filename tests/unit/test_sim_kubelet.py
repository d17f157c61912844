"""The fake kubelet's pod status transitions (pure parts)."""

from __future__ import annotations

from typing import Any

from kfdeploy.sim.kubelet import FakeKubelet, _finished_status, _running_status


class _Recorder:
    """Stands in for KubeClient: records calls, answers node lookups."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "n1",
                "labels": {"sim.kfdeploy.dev/simulated": "true"},
                "annotations": {"sim.kfdeploy.dev/index": "2"},
            }
        }

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path, patch))
        return {}

    def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append(("delete", path, body))
        return {}


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}], **spec},
        "status": {"phase": "Pending"},
    }


def test_bound_pod_becomes_running_and_ready() -> None:
    rec = _Recorder()
    FakeKubelet(rec).handle_pod(_pod())  # type: ignore[arg-type]
    [(verb, path, patch)] = rec.calls
    assert (verb, path) == ("patch", "/api/v1/namespaces/ns/pods/p/status")
    status = patch["status"]
    assert status["phase"] == "Running"
    assert status["podIP"].startswith("10.244.2.")
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert status["containerStatuses"][0]["ready"] is True


def test_terminating_pod_is_deleted_with_zero_grace() -> None:
    rec = _Recorder()
    pod = _pod()
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    FakeKubelet(rec).handle_pod(pod)  # type: ignore[arg-type]
    [(verb, _path, body)] = rec.calls
    assert (
        verb == "delete"
        and body["gracePeriodSeconds"] == 0
        and body["preconditions"]["uid"] == "u1"
    )


def test_unbound_pod_is_left_to_the_scheduler() -> None:
    rec = _Recorder()
    pod = _pod()
    del pod["spec"]["nodeName"]
    FakeKubelet(rec).handle_pod(pod)  # type: ignore[arg-type]
    assert rec.calls == []


def test_job_pod_statuses() -> None:
    pod = _pod(restartPolicy="Never", initContainers=[{"name": "init", "image": "x"}])
    running = _running_status(pod, "10.255.0.1", "10.244.0.5")
    assert running["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    done = _finished_status({**pod, "status": running}, "Succeeded")
    assert done["phase"] == "Succeeded"
    assert done["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    failed = _finished_status(pod, "Failed")
    assert (
        failed["phase"] == "Failed"
        and failed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    )


def test_pod_ips_are_unique_per_node() -> None:
    kubelet = FakeKubelet(_Recorder())  # type: ignore[arg-type]
    ips = {kubelet._allocate_ip("n1", 1, f"uid-{i}", _pod()) for i in range(50)}
    assert len(ips) == 50
    freed = kubelet._pod_ip["uid-0"]
    kubelet._release_ip("n1", "uid-0")
    assert kubelet._allocate_ip("n1", 1, "uid-new", _pod()) == freed
