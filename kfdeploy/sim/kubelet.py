"""A fake kubelet for every simulated node, plus a storage provisioner.

Run as a daemon inside the control plane's network namespace:
`python -m kfdeploy.sim.kubelet --server URL --ca CA --cert CRT --key KEY`.

What it does, and why each part is needed for real controllers to make progress:
- Nodes labelled `sim.kfdeploy.dev/simulated=true`: posts a Ready status built from the capacity
  annotation and renews a Lease in `kube-node-lease` every 10 s, so the node lifecycle controller
  keeps them Ready and never taints or evicts.
- Pods bound to those nodes: marks them Running with every container ready and a pod IP from the
  node's pod CIDR (Deployments become Available, StatefulSets and DaemonSets ready). Pods whose
  restartPolicy is not Always (Job pods) run for `sim.kfdeploy.dev/run-seconds` (default 1) and
  then Succeed, or Fail if annotated `sim.kfdeploy.dev/result: Failed`.
- Pods being deleted: removed at once (a real kubelet confirms with a zero-grace delete).
- PersistentVolumeClaims of any dynamically provisioned StorageClass: a PersistentVolume is
  created for each, which the real PV controller then binds; released ones are deleted again.
  Nothing else provisions volumes on a simulated cluster.
Containers never run: images are not pulled, probes and commands are not executed.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from pathlib import Path

from kfdeploy.sim.kube import JSON, KubeApiError, KubeClient
from kfdeploy.sim.nodes import (
    INDEX_ANNOTATION,
    SIM_LABEL,
    node_ip,
    node_status,
    now_micro,
    now_rfc3339,
)

log = logging.getLogger("kfdeploy.sim.kubelet")

LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
RUN_SECONDS_ANNOTATION = "sim.kfdeploy.dev/run-seconds"
RESULT_ANNOTATION = "sim.kfdeploy.dev/result"
PROVISIONER_ANNOTATION = "pv.kubernetes.io/provisioned-by"
SIM_PROVISIONER = "sim.kfdeploy.dev/hostpath"
_DEFAULT_CLASS_ANN = "storageclass.kubernetes.io/is-default-class"


class FakeKubelet:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._nodes: dict[str, int] = {}  # name -> index
        self._ips: dict[str, set[str]] = {}  # node -> pod IPs in use
        self._pod_ip: dict[str, str] = {}  # pod uid -> IP
        self._pending_completion: set[str] = set()

    # -- nodes ------------------------------------------------------------------------------

    def sync_nodes(self) -> None:
        nodes = self.client.get("/api/v1/nodes", labelSelector=f"{SIM_LABEL}=true")["items"]
        seen: dict[str, int] = {}
        for node in nodes:
            name = node["metadata"]["name"]
            seen[name] = int((node["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, "0"))
            try:
                self.client.merge_patch(
                    f"/api/v1/nodes/{name}/status", {"status": node_status(node)}
                )
                self._renew_lease(node)
            except KubeApiError as exc:
                if exc.status != 404:  # deleted meanwhile: fine
                    log.warning("heartbeat for %s failed: %s", name, exc)
        with self._lock:
            self._nodes = seen

    def _renew_lease(self, node: JSON) -> None:
        name = node["metadata"]["name"]
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now_micro(),
        }
        try:
            self.client.merge_patch(path, {"spec": spec})
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": "kube-node-lease",
                    # Owned by the Node, as a real kubelet does, so the garbage collector removes
                    # the lease when a simulated node is removed.
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": spec,
            }
            try:
                self.client.create(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease
                )
            except KubeApiError as exc2:
                if exc2.status != 409:
                    raise

    def heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.sync_nodes()
            except Exception:  # keep heartbeating through API restarts
                log.exception("node heartbeat failed")
            self.stopping.wait(HEARTBEAT_SECONDS)

    def _node_index(self, name: str) -> int | None:
        with self._lock:
            if name in self._nodes:
                return self._nodes[name]
        # A node registered since the last heartbeat: look it up once.
        try:
            node = self.client.get(f"/api/v1/nodes/{name}")
        except KubeApiError:
            return None
        labels = node["metadata"].get("labels") or {}
        if labels.get(SIM_LABEL) != "true":
            return None
        index = int((node["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, "0"))
        with self._lock:
            self._nodes[name] = index
        return index

    # -- pods -------------------------------------------------------------------------------

    def _allocate_ip(self, node: str, index: int, uid: str, pod: JSON) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return node_ip(index)
        with self._lock:
            if uid in self._pod_ip:
                return self._pod_ip[uid]
            used = self._ips.setdefault(node, set())
            net = ipaddress.ip_network(f"10.244.{index}.0/24")
            for host in list(net.hosts())[1:]:
                ip = str(host)
                if ip not in used:
                    used.add(ip)
                    self._pod_ip[uid] = ip
                    return ip
        raise RuntimeError(f"pod CIDR of node {node} exhausted")

    def _release_ip(self, node: str, uid: str) -> None:
        with self._lock:
            ip = self._pod_ip.pop(uid, None)
            if ip:
                self._ips.get(node, set()).discard(ip)

    def handle_pod(self, pod: JSON, event: str = "MODIFIED") -> None:
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        node = spec.get("nodeName")
        uid = meta["uid"]
        if event == "DELETED":
            if node:
                self._release_ip(node, uid)
            return
        if not node:
            return
        index = self._node_index(node)
        if index is None:
            return
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            # What a kubelet does once containers stopped: the final, zero-grace delete.
            self.client.delete(path, {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
            self._release_ip(node, uid)
            return
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            self._release_ip(node, uid)
            return
        if phase == "Running" and status.get("podIP"):
            if spec.get("restartPolicy", "Always") != "Always":
                self._schedule_completion(pod)
            self._remember_ip(node, uid, status.get("podIP"))
            return
        ip = self._allocate_ip(node, index, uid, pod)
        self.client.merge_patch(
            path + "/status", {"status": _running_status(pod, node_ip(index), ip)}
        )
        if spec.get("restartPolicy", "Always") != "Always":
            self._schedule_completion(pod)

    def _remember_ip(self, node: str, uid: str, ip: str | None) -> None:
        if not ip:
            return
        with self._lock:
            self._pod_ip[uid] = ip
            self._ips.setdefault(node, set()).add(ip)

    def _schedule_completion(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self._pending_completion:
                return
            self._pending_completion.add(uid)
        annotations = pod["metadata"].get("annotations") or {}
        try:
            delay = float(annotations.get(RUN_SECONDS_ANNOTATION, "1"))
        except ValueError:
            delay = 1.0
        timer = threading.Timer(delay, self._complete, args=(pod,))
        timer.daemon = True
        timer.start()

    def _complete(self, pod: JSON) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        try:
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            current = self.client.get(path)
            if current["metadata"]["uid"] != uid or current["metadata"].get("deletionTimestamp"):
                return
            result = (meta.get("annotations") or {}).get(RESULT_ANNOTATION, "Succeeded")
            self.client.merge_patch(path + "/status", {"status": _finished_status(current, result)})
        except KubeApiError as exc:
            if exc.status != 404:
                log.warning("completing pod %s/%s failed: %s", meta["namespace"], meta["name"], exc)
        except Exception:
            log.exception("completing pod %s/%s failed", meta["namespace"], meta["name"])
        finally:
            with self._lock:
                self._pending_completion.discard(uid)

    def pod_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.client.get("/api/v1/pods", fieldSelector="spec.nodeName!=")
                for pod in listing["items"]:
                    self._safe_handle(pod, "ADDED")
                rv = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for ev in self.client.watch("/api/v1/pods", rv, timeout_seconds=60):
                        if ev["type"] == "ERROR":
                            raise _Relist(ev["object"].get("message", "watch error"))
                        obj = ev["object"]
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] != "BOOKMARK":
                            self._safe_handle(obj, ev["type"])
            except _Relist as exc:
                log.info("relisting pods: %s", exc)
            except Exception:
                log.exception("pod watch failed; relisting in 1 s")
                self.stopping.wait(1)

    def _safe_handle(self, pod: JSON, event: str) -> None:
        try:
            self.handle_pod(pod, event)
        except KubeApiError as exc:
            # 404/409: the pod changed or went away meanwhile; the next event brings it back.
            if exc.status not in (404, 409):
                log.warning(
                    "pod %s/%s: %s",
                    pod["metadata"].get("namespace"),
                    pod["metadata"].get("name"),
                    exc,
                )
        except Exception:
            log.exception(
                "pod %s/%s", pod["metadata"].get("namespace"), pod["metadata"].get("name")
            )

    # -- storage ----------------------------------------------------------------------------

    def sync_volumes(self) -> None:
        classes = {
            c["metadata"]["name"]: c
            for c in self.client.get("/apis/storage.k8s.io/v1/storageclasses")["items"]
        }
        default = next(
            (
                n
                for n, c in classes.items()
                if (c["metadata"].get("annotations") or {}).get(_DEFAULT_CLASS_ANN) == "true"
            ),
            None,
        )
        pvs = self.client.get("/api/v1/persistentvolumes")["items"]
        claimed = {
            (pv["spec"].get("claimRef") or {}).get("uid")
            for pv in pvs
            if pv["spec"].get("claimRef")
        }
        for pv in pvs:
            ours = (pv["metadata"].get("annotations") or {}).get(
                PROVISIONER_ANNOTATION
            ) == SIM_PROVISIONER
            released = (pv.get("status") or {}).get("phase") in ("Released", "Failed")
            deletes = pv["spec"].get("persistentVolumeReclaimPolicy", "Delete") == "Delete"
            if ours and released and deletes:
                self.client.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
        for pvc in self.client.get("/api/v1/persistentvolumeclaims")["items"]:
            if (pvc.get("status") or {}).get("phase") != "Pending" or pvc["metadata"].get(
                "deletionTimestamp"
            ):
                continue
            if pvc["spec"].get("volumeName") or pvc["metadata"]["uid"] in claimed:
                continue
            cls_name = pvc["spec"].get("storageClassName", default)
            sc = classes.get(cls_name or "")
            if sc is None or sc.get("provisioner") == "kubernetes.io/no-provisioner":
                continue
            anns = pvc["metadata"].get("annotations") or {}
            if (
                sc.get("volumeBindingMode") == "WaitForFirstConsumer"
                and "volume.kubernetes.io/selected-node" not in anns
            ):
                continue  # the scheduler picks a node first, exactly as with a real provisioner
            self._provision(pvc, sc)

    def _provision(self, pvc: JSON, sc: JSON) -> None:
        meta = pvc["metadata"]
        name = f"pvc-{meta['uid']}"
        size = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {PROVISIONER_ANNOTATION: SIM_PROVISIONER},
                "labels": {SIM_LABEL: "true"},
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": pvc["spec"].get("volumeMode", "Filesystem"),
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                "storageClassName": sc["metadata"]["name"],
                # Never mounted: no kubelet mounts anything on a simulated node.
                "hostPath": {"path": f"/var/lib/kfdeploy-sim/volumes/{name}"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.client.create("/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for %s/%s", name, meta["namespace"], meta["name"])
        except KubeApiError as exc:
            if exc.status != 409:
                raise

    def volume_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.sync_volumes()
            except Exception:
                log.exception("volume sync failed")
            self.stopping.wait(2)

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self.pod_loop, name="pods", daemon=True),
            threading.Thread(target=self.volume_loop, name="volumes", daemon=True),
        ]
        for t in threads:
            t.start()
        self.stopping.wait()


class _Relist(Exception):
    pass


def _container_statuses(containers: list[JSON], state: JSON, *, ready: bool) -> list[JSON]:
    return [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": f"sim://{c.get('image', '')}",
            "containerID": f"sim://{c['name']}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
        }
        for c in containers
    ]


def _conditions(ready: bool, now: str, ready_reason: str | None = None) -> list[JSON]:
    flag = "True" if ready else "False"
    conds = [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": flag, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ]
    if ready_reason:
        for c in conds[2:4]:
            c["reason"] = ready_reason
    return conds


def _running_status(pod: JSON, host_ip: str, pod_ip: str) -> JSON:
    now = now_rfc3339()
    spec = pod.get("spec") or {}
    init_done = {
        "terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}
    }
    return {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "conditions": _conditions(True, now),
        "initContainerStatuses": _container_statuses(
            spec.get("initContainers") or [], init_done, ready=True
        ),
        "containerStatuses": _container_statuses(
            spec.get("containers") or [], {"running": {"startedAt": now}}, ready=True
        ),
    }


def _finished_status(pod: JSON, result: str) -> JSON:
    now = now_rfc3339()
    spec = pod.get("spec") or {}
    ok = result != "Failed"
    started = (pod.get("status") or {}).get("startTime", now)
    state = {
        "terminated": {
            "exitCode": 0 if ok else 1,
            "reason": "Completed" if ok else "Error",
            "startedAt": started,
            "finishedAt": now,
        }
    }
    return {
        "phase": "Succeeded" if ok else "Failed",
        "conditions": _conditions(False, now, "PodCompleted" if ok else "PodFailed"),
        "containerStatuses": _container_statuses(spec.get("containers") or [], state, ready=False),
    }


def _load_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kfdeploy.sim.kubelet")
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _load_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s"
    )
    kubelet = FakeKubelet(KubeClient(args.server, args.ca, args.cert, args.key, timeout=30))
    signal.signal(signal.SIGTERM, lambda *_: kubelet.stopping.set())
    log.info("fake kubelet for simulated nodes, API %s", args.server)
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
