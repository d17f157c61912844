"""The emulated Magnum's data and its asynchronous state machines.

Everything Magnum would keep in its database lives here, guarded by one lock and saved to
`<state_dir>/magnum-state.json` after every change, so a restarted emulator daemon still knows
the clusters whose control planes kept running. Operations that Magnum hands to its conductor
(create, resize, upgrade, delete) run on worker threads: the API call returns at once (202) and
the resource moves IN_PROGRESS -> COMPLETE/FAILED after the configured delay.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kfdeploy.files import write_atomic
from kfdeploy.sim.magnum.backend import Backend, FakeBackend, LocalBackend, node_names, sim_nodes
from kfdeploy.sim.magnum.config import EmulatorConfig, FaultState

log = logging.getLogger(__name__)

IN_PROGRESS_SUFFIX = "_IN_PROGRESS"


class ApiError(Exception):
    """An error answer in Magnum's format: status, title, detail, optional extra fields."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def make_backend(config: EmulatorConfig) -> Backend:
    root = config.state_dir / "clusters"
    return LocalBackend(root) if config.backend == "local" else FakeBackend(root)


class MagnumState:
    def __init__(self, config: EmulatorConfig, faults: FaultState, backend: Backend) -> None:
        self.config = config
        self.faults = faults
        self.backend = backend
        self.lock = threading.RLock()
        self.templates: dict[str, dict[str, Any]] = {}
        self.clusters: dict[str, dict[str, Any]] = {}
        self._file = config.state_dir / "magnum-state.json"
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    # -- persistence ----------------------------------------------------------------------

    def save(self) -> None:
        with self.lock:
            data = json.dumps({"templates": self.templates, "clusters": self.clusters}, indent=1)
        write_atomic(self._file, data)

    def load(self) -> None:
        """Reload after a restart. Operations that were running died with the old process, so
        their resources end FAILED; control planes of live clusters are started again."""
        try:
            data = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return
        self.templates = data.get("templates", {})
        self.clusters = data.get("clusters", {})
        for cluster in list(self.clusters.values()):
            if cluster["status"] == "DELETE_IN_PROGRESS":
                self._finish_delete(cluster["uuid"])
                continue
            for ng in cluster["nodegroups"].values():
                if ng["status"].endswith(IN_PROGRESS_SUFFIX):
                    ng["status"] = ng["status"].replace(IN_PROGRESS_SUFFIX, "_FAILED")
                    ng["status_reason"] = "interrupted: the emulator restarted"
            if cluster["status"].endswith(IN_PROGRESS_SUFFIX):
                cluster["status"] = cluster["status"].replace(IN_PROGRESS_SUFFIX, "_FAILED")
                cluster["status_reason"] = "interrupted: the emulator restarted"
            if cluster.get("api_address"):
                self._spawn(functools.partial(self._revive, cluster))
        self.save()

    def _revive(self, cluster: dict[str, Any]) -> None:
        try:
            address = self.backend.revive(cluster["uuid"], cluster["name"], self._nodes(cluster))
        except Exception as exc:  # a dead control plane is a cluster fault, not an emulator crash
            log.exception("reviving cluster %s failed", cluster["name"])
            with self.lock:
                cluster["health_status"] = "UNHEALTHY"
                cluster["health_status_reason"] = {"api": f"control plane failed: {exc}"}
            return
        with self.lock:
            if address:
                cluster["api_address"] = address

    # -- threads --------------------------------------------------------------------------

    def _spawn(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("emulator operation failed")
            finally:
                with contextlib.suppress(OSError):
                    self.save()

        thread = threading.Thread(target=run, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _sleep(self, seconds: float) -> None:
        self._closing.wait(max(seconds, 0))

    def close(self, timeout: float = 30) -> None:
        self._closing.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def destroy_all(self) -> None:
        with self.lock:
            keys = list(self.clusters)
        for key in keys:
            with contextlib.suppress(Exception):
                self.backend.destroy(key)
        with self.lock:
            self.clusters.clear()
        self.save()

    # -- lookups --------------------------------------------------------------------------

    def find_template(self, ident: str) -> dict[str, Any]:
        with self.lock:
            if ident in self.templates:
                return self.templates[ident]
            found = [t for t in self.templates.values() if t["name"] == ident]
        if not found:
            raise ApiError(404, "Not Found", f"ClusterTemplate {ident} could not be found.")
        if len(found) > 1:
            raise ApiError(
                409,
                "Conflict",
                "Multiple cluster templates exist with same name. "
                "Please use the cluster template uuid instead.",
            )
        return found[0]

    def find_cluster(self, ident: str) -> dict[str, Any]:
        with self.lock:
            if ident in self.clusters:
                return self.clusters[ident]
            found = [c for c in self.clusters.values() if c["name"] == ident]
        if not found:
            raise ApiError(404, "Not Found", f"Cluster {ident} could not be found.")
        if len(found) > 1:
            raise ApiError(
                409,
                "Conflict",
                "Multiple clusters exist with same name. Please use the cluster uuid instead.",
            )
        return found[0]

    def find_nodegroup(self, cluster: dict[str, Any], ident: str) -> dict[str, Any]:
        ngs: dict[str, dict[str, Any]] = cluster["nodegroups"]
        if ident in ngs:
            return ngs[ident]
        for ng in ngs.values():
            if ng["name"] == ident:
                return ng
        raise ApiError(404, "Not Found", f"Nodegroup {ident} could not be found.")

    def check_flavor(self, flavor: str | None) -> None:
        if flavor not in self.config.flavors:
            raise ApiError(400, "Bad Request", f"Unable to find flavor {flavor}.")

    def _nodes(self, cluster: dict[str, Any]) -> list[Any]:
        # node_labels/node_taints are only stored for requests at 1.14 or later
        return sim_nodes(list(cluster["nodegroups"].values()), self.config.flavors, node_api=True)

    # -- templates ------------------------------------------------------------------------

    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("coe") != "kubernetes":
            raise ApiError(400, "Bad Request", f"Cluster type ({body.get('coe')}) not supported.")
        if not body.get("image_id"):
            raise ApiError(400, "Bad Request", "Mandatory field missing: image_id")
        for key in ("flavor_id", "master_flavor_id"):
            if body.get(key):
                self.check_flavor(body[key])
        template = {
            "uuid": str(uuid.uuid4()),
            "name": body.get("name"),
            "coe": "kubernetes",
            "image_id": body["image_id"],
            "keypair_id": body.get("keypair_id"),
            "external_network_id": body.get("external_network_id"),
            "fixed_network": body.get("fixed_network"),
            "fixed_subnet": body.get("fixed_subnet"),
            "network_driver": body.get("network_driver") or "flannel",
            "volume_driver": body.get("volume_driver"),
            "docker_volume_size": body.get("docker_volume_size"),
            "dns_nameserver": body.get("dns_nameserver") or "8.8.8.8",
            "flavor_id": body.get("flavor_id") or "m2.medium",
            "master_flavor_id": body.get("master_flavor_id") or "m2.medium",
            "labels": {str(k): str(v) for k, v in (body.get("labels") or {}).items()},
            "tls_disabled": bool(body.get("tls_disabled", False)),
            "public": bool(body.get("public", False)),
            "hidden": bool(body.get("hidden", False)),
            "master_lb_enabled": bool(body.get("master_lb_enabled", False)),
            "floating_ip_enabled": bool(body.get("floating_ip_enabled", True)),
            "server_type": body.get("server_type") or "vm",
            "registry_enabled": False,
            "insecure_registry": None,
            "http_proxy": None,
            "https_proxy": None,
            "no_proxy": None,
            "apiserver_port": None,
            "cluster_distro": "fedora-coreos",
            "project_id": self.config.project,
            "user_id": "kfdeploy",
            "created_at": now(),
            "updated_at": None,
        }
        with self.lock:
            self.templates[template["uuid"]] = template
        self.save()
        return template

    def _template_in_use(self, template_id: str) -> bool:
        with self.lock:
            return any(c["cluster_template_id"] == template_id for c in self.clusters.values())

    def patch_template(self, ident: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        template = self.find_template(ident)
        if self._template_in_use(template["uuid"]) and any(
            op.get("path") not in ("/public", "/hidden") for op in ops
        ):
            raise ApiError(
                400,
                "Bad Request",
                f"ClusterTemplate {template['uuid']} is referenced by one or multiple clusters.",
            )
        with self.lock:
            updated = apply_json_patch(template, ops, readonly={"/uuid", "/project_id"})
            updated["updated_at"] = now()
            self.templates[template["uuid"]] = updated
        self.save()
        return updated

    def delete_template(self, ident: str) -> None:
        template = self.find_template(ident)
        if self._template_in_use(template["uuid"]):
            raise ApiError(
                400,
                "Bad Request",
                f"ClusterTemplate {template['uuid']} is referenced by one or multiple clusters.",
            )
        with self.lock:
            del self.templates[template["uuid"]]
        self.save()

    # -- clusters -------------------------------------------------------------------------

    def create_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("cluster_template_id"):
            raise ApiError(400, "Bad Request", "Mandatory field missing: cluster_template_id")
        template = self.find_template(str(body["cluster_template_id"]))
        quota = self.faults.quota(self.config.cluster_quota)
        with self.lock:
            count = len(self.clusters)
        if quota is not None and count >= quota:
            raise ApiError(
                403,
                "Forbidden",
                f"Resource limit exceeded: You have reached the maximum clusters per project, "
                f"{quota}. You may delete a cluster to make room for a new one.",
                code="client",
            )
        flavor = body.get("flavor_id") or template["flavor_id"]
        master_flavor = body.get("master_flavor_id") or template["master_flavor_id"]
        self.check_flavor(flavor)
        self.check_flavor(master_flavor)
        node_count = int(body.get("node_count", 1))
        master_count = int(body.get("master_count", 1))
        if node_count < 0 or master_count < 1:
            raise ApiError(400, "Bad Request", "Invalid node_count or master_count.")
        labels = {str(k): str(v) for k, v in (body.get("labels") or {}).items()}
        merge = bool(body.get("merge_labels", False))
        effective = {**template["labels"], **labels} if merge else (labels or template["labels"])
        cluster_uuid = str(uuid.uuid4())
        cluster: dict[str, Any] = {
            "uuid": cluster_uuid,
            "name": body.get("name") or f"cluster-{cluster_uuid[:8]}",
            "cluster_template_id": template["uuid"],
            "keypair": body.get("keypair") or template.get("keypair_id"),
            "create_timeout": int(body.get("create_timeout", 60)),
            "flavor_id": flavor,
            "master_flavor_id": master_flavor,
            "labels": effective,
            "labels_overridden": {
                k: template["labels"][k]
                for k in labels
                if k in template["labels"] and template["labels"][k] != labels[k]
            },
            "labels_added": {k: v for k, v in labels.items() if k not in template["labels"]},
            "labels_skipped": {}
            if merge or not labels
            else {k: v for k, v in template["labels"].items() if k not in labels},
            "merge_labels": merge,
            "status": "CREATE_IN_PROGRESS",
            "status_reason": None,
            "health_status": "UNKNOWN",
            "health_status_reason": {},
            "api_address": None,
            "coe_version": None,
            "container_version": "1.12.6",
            "master_addresses": [],
            "node_addresses": [],
            "faults": {},
            "project_id": self.config.project,
            "user_id": "kfdeploy",
            "created_at": now(),
            "updated_at": None,
            "stack_id": str(uuid.uuid4()),
            "discovery_url": None,
            "docker_volume_size": body.get("docker_volume_size"),
            "fixed_network": body.get("fixed_network"),
            "fixed_subnet": body.get("fixed_subnet"),
            "floating_ip_enabled": body.get("floating_ip_enabled", template["floating_ip_enabled"]),
            "master_lb_enabled": body.get("master_lb_enabled", template["master_lb_enabled"]),
            "_suffix": uuid.uuid4().hex[:6],
            "nodegroups": {},
        }
        # Magnum creates two default nodegroups with every cluster; the worker's bounds come from
        # the autoscaler labels.
        for name, role, count, fl in (
            ("default-master", "master", master_count, master_flavor),
            ("default-worker", "worker", node_count, flavor),
        ):
            ng = self._new_nodegroup(cluster, name, role, fl, count, effective, merge)
            ng["is_default"] = True
            if role == "worker":
                ng["min_node_count"] = int(effective.get("min_node_count", 0))
                ng["max_node_count"] = (
                    int(effective["max_node_count"]) if effective.get("max_node_count") else None
                )
            else:
                ng["min_node_count"] = master_count
            cluster["nodegroups"][ng["uuid"]] = ng
        with self.lock:
            self.clusters[cluster_uuid] = cluster
        self.save()
        self._spawn(lambda: self._run_create(cluster_uuid))
        return cluster

    def _new_nodegroup(
        self,
        cluster: dict[str, Any],
        name: str,
        role: str,
        flavor: str,
        count: int,
        labels: dict[str, str],
        merge: bool,
    ) -> dict[str, Any]:
        template = self.templates.get(cluster["cluster_template_id"], {})
        ng = {
            "uuid": str(uuid.uuid4()),
            "name": name,
            "cluster_id": cluster["uuid"],
            "project_id": self.config.project,
            "docker_volume_size": cluster.get("docker_volume_size"),
            "labels": dict(labels),
            "flavor_id": flavor,
            "image_id": template.get("image_id"),
            "node_addresses": [],
            "node_count": count,
            "role": role,
            "min_node_count": 0,
            "max_node_count": None,
            "is_default": False,
            "stack_id": cluster["stack_id"],
            "status": "CREATE_IN_PROGRESS",
            "status_reason": None,
            "version": None,
            "merge_labels": merge,
            "labels_overridden": {},
            "labels_added": {},
            "labels_skipped": {},
            "created_at": now(),
            "updated_at": None,
            "node_labels": {},
            "node_taints": [],
            "servers": [],
        }
        ng["servers"] = node_names(cluster["name"], cluster["_suffix"], ng, count)
        return ng

    def _run_create(self, cluster_uuid: str) -> None:
        started = time.monotonic()
        with self.lock:
            cluster = self.clusters[cluster_uuid]
            template = self.templates.get(cluster["cluster_template_id"], {})
        reason = self.faults.cluster_failure(cluster["name"])
        address = None
        if reason is None:
            try:
                nodes = self._nodes(cluster)
                address = self.backend.provision(cluster_uuid, cluster["name"], nodes)
            except Exception as exc:
                log.exception("provisioning cluster %s failed", cluster["name"])
                reason = f"control plane failed to start: {exc}"
        self._sleep(self.config.delays.cluster_create - (time.monotonic() - started))
        with self.lock:
            # Checked and settled under one lock: a delete cannot slip in between.
            deleted = cluster_uuid not in self.clusters or cluster["status"] != "CREATE_IN_PROGRESS"
            if not deleted:
                self._settle_create(cluster, template, reason, address)
        if deleted:
            # Deleted while being created (e.g. a client's rollback after a timeout): the
            # deletion may have run before the control plane existed, so tear it down here too.
            with contextlib.suppress(Exception):
                self.backend.destroy(cluster_uuid)

    def _settle_create(
        self,
        cluster: dict[str, Any],
        template: dict[str, Any],
        reason: str | None,
        address: str | None,
    ) -> None:
        cluster["updated_at"] = now()
        if reason is not None:
            cluster["status"] = "CREATE_FAILED"
            cluster["status_reason"] = f"Stack CREATE failed: Resource CREATE failed: {reason}"
            cluster["faults"] = {ng["name"]: reason for ng in cluster["nodegroups"].values()}
            for ng in cluster["nodegroups"].values():
                ng["status"] = "CREATE_FAILED"
                ng["status_reason"] = reason
            return
        kube_tag = template.get("labels", {}).get("kube_tag", "v1.36.3")
        cluster["api_address"] = address
        cluster["coe_version"] = kube_tag
        cluster["status"] = "CREATE_COMPLETE"
        cluster["status_reason"] = "Stack CREATE completed successfully"
        cluster["health_status"] = "HEALTHY"
        cluster["health_status_reason"] = {"api": "ok"}
        for ng in cluster["nodegroups"].values():
            ng["status"] = "CREATE_COMPLETE"
            ng["status_reason"] = "Stack CREATE completed successfully"
            ng["version"] = kube_tag
        self._addresses(cluster)

    def _addresses(self, cluster: dict[str, Any]) -> None:
        index = 0
        masters: list[str] = []
        nodes: list[str] = []
        for ng in cluster["nodegroups"].values():
            ng["node_addresses"] = []
            for _ in ng["servers"]:
                index += 1
                addr = f"10.254.{index // 250}.{index % 250 + 1}"
                ng["node_addresses"].append(addr)
                (masters if ng["role"] == "master" else nodes).append(addr)
        cluster["master_addresses"], cluster["node_addresses"] = masters, nodes

    def delete_cluster(self, ident: str) -> None:
        cluster = self.find_cluster(ident)
        with self.lock:
            cluster["status"] = "DELETE_IN_PROGRESS"
            cluster["status_reason"] = None
        self.save()
        self._spawn(lambda: self._run_delete(cluster["uuid"]))

    def _run_delete(self, cluster_uuid: str) -> None:
        started = time.monotonic()
        with contextlib.suppress(Exception):
            self.backend.destroy(cluster_uuid)
        self._sleep(self.config.delays.cluster_delete - (time.monotonic() - started))
        self._finish_delete(cluster_uuid)

    def _finish_delete(self, cluster_uuid: str) -> None:
        with self.lock:
            self.clusters.pop(cluster_uuid, None)

    def patch_cluster(self, ident: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        cluster = self.find_cluster(ident)
        for op in ops:
            if op.get("op") not in ("replace", "add", "remove"):
                raise ApiError(
                    400, "Bad Request", f"The patch operation {op.get('op')!r} is not supported."
                )
            if op.get("path") not in ("/node_count", "/health_status", "/health_status_reason"):
                raise ApiError(
                    400,
                    "Bad Request",
                    f"'{op.get('path')}' is an internal attribute and can not be updated",
                )
        for op in ops:
            if op["path"] == "/node_count":
                worker = self.find_nodegroup(cluster, "default-worker")
                self.resize(cluster, worker, int(op["value"]), [])
        return cluster

    @staticmethod
    def busy(cluster: dict[str, Any]) -> bool:
        return str(cluster["status"]).endswith(IN_PROGRESS_SUFFIX)

    def resize(
        self,
        cluster: dict[str, Any],
        ng: dict[str, Any],
        node_count: int,
        nodes_to_remove: list[str],
    ) -> None:
        if ng["role"] == "master":
            raise ApiError(
                400, "Bad Request", "Resizing the master nodegroup is not supported by this driver."
            )
        if node_count < ng["min_node_count"] or (
            ng["max_node_count"] is not None and node_count > ng["max_node_count"]
        ):
            raise ApiError(
                400,
                "Bad Request",
                f"Resizing {ng['name']} outside the allowed range: min_node_count = "
                f"{ng['min_node_count']}, max_node_count = {ng['max_node_count']}",
            )
        with self.lock:
            busy = self.busy(cluster) or str(ng["status"]).endswith(IN_PROGRESS_SUFFIX)
            if busy or self.faults.take_drop():
                # Magnum casts the resize to its conductor, which refuses a busy cluster after
                # the API already answered 202: nothing changes and nobody is told.
                log.info("resize of cluster %s dropped", cluster["name"])
                return
            old = list(ng["servers"])
            keep = [s for s in old if s not in set(nodes_to_remove)]
            if len(keep) > node_count:
                keep = keep[:node_count]
            wanted = node_names(cluster["name"], cluster["_suffix"], ng, node_count + len(old) + 1)
            for name in wanted:
                if len(keep) >= node_count:
                    break
                if name not in keep:
                    keep.append(name)
            ng["node_count"] = node_count
            ng["status"] = "UPDATE_IN_PROGRESS"
            cluster["status"] = "UPDATE_IN_PROGRESS"
            new_servers = keep
        self.save()

        def run() -> None:
            self._sleep(self.config.delays.resize)
            with self.lock:
                ng["servers"] = new_servers
                nodes = self._nodes(cluster)
            error = self._apply_nodes(cluster, nodes)
            with self.lock:
                ng["status"] = "UPDATE_FAILED" if error else "UPDATE_COMPLETE"
                ng["status_reason"] = error or "Stack UPDATE completed successfully"
                self._settle(cluster, error)

        self._spawn(run)

    def _apply_nodes(self, cluster: dict[str, Any], nodes: list[Any]) -> str | None:
        try:
            self.backend.set_nodes(cluster["uuid"], nodes)
        except Exception as exc:
            log.exception("updating nodes of %s failed", cluster["name"])
            return f"node update failed: {exc}"
        return None

    def _settle(self, cluster: dict[str, Any], error: str | None) -> None:
        """Cluster status after an update: IN_PROGRESS while any nodegroup still is."""
        cluster["updated_at"] = now()
        if any(
            str(n["status"]).endswith(IN_PROGRESS_SUFFIX) for n in cluster["nodegroups"].values()
        ):
            return
        failed = {
            n["name"]: n["status_reason"]
            for n in cluster["nodegroups"].values()
            if str(n["status"]).endswith("_FAILED")
        }
        cluster["faults"] = failed
        if error or failed:
            cluster["status"] = "UPDATE_FAILED"
            cluster["status_reason"] = error or "; ".join(f"{k}: {v}" for k, v in failed.items())
        else:
            cluster["status"] = "UPDATE_COMPLETE"
            cluster["status_reason"] = "Stack UPDATE completed successfully"
        self._addresses(cluster)

    def upgrade(self, cluster: dict[str, Any], template_ident: str, nodegroup: str | None) -> None:
        template = self.find_template(template_ident)
        with self.lock:
            if self.busy(cluster):
                raise ApiError(
                    409,
                    "Conflict",
                    f"Cluster {cluster['uuid']} is in status {cluster['status']}; "
                    "upgrade is not allowed now.",
                )
            # As Magnum: without a nodegroup the default worker is upgraded, and with it the
            # control plane (default master) and the cluster's template; other nodegroups are
            # upgraded one by one, and only to the cluster's template.
            if nodegroup:
                ng = self.find_nodegroup(cluster, nodegroup)
                if not ng["is_default"] and template["uuid"] != cluster["cluster_template_id"]:
                    current = self.templates.get(cluster["cluster_template_id"], {})
                    raise ApiError(
                        409,
                        "Conflict",
                        "Cluster Template is not valid for upgrade: Nodegroup "
                        f"{ng['name']} can be upgraded only to match cluster's template "
                        f"({current.get('name')}).",
                    )
                targets = [ng]
            else:
                targets = [n for n in cluster["nodegroups"].values() if n["is_default"]]
            cluster["status"] = "UPDATE_IN_PROGRESS"
            for ng in targets:
                ng["status"] = "UPDATE_IN_PROGRESS"
        self.save()

        def run() -> None:
            self._sleep(self.config.delays.upgrade)
            kube_tag = template["labels"].get("kube_tag", "v1.36.3")
            with self.lock:
                if not nodegroup:
                    cluster["cluster_template_id"] = template["uuid"]
                    cluster["coe_version"] = kube_tag
                for ng in targets:
                    ng["version"] = kube_tag
                    ng["image_id"] = template["image_id"]
                    ng["status"] = "UPDATE_COMPLETE"
                    ng["status_reason"] = "Stack UPDATE completed successfully"
                self._settle(cluster, None)

        self._spawn(run)

    # -- nodegroups -----------------------------------------------------------------------

    def create_nodegroup(
        self, cluster: dict[str, Any], body: dict[str, Any], version: tuple[int, int]
    ) -> dict[str, Any]:
        if not cluster.get("api_address"):
            raise ApiError(409, "Conflict", "Cluster API address is not available yet")
        name = body.get("name")
        if not name:
            raise ApiError(400, "Bad Request", "Mandatory field missing: name")
        if any(ng["name"] == name for ng in cluster["nodegroups"].values()):
            raise ApiError(
                409,
                "Conflict",
                f"A node group with name {name} already exists in the cluster {cluster['name']}.",
            )
        role = body.get("role") or "worker"
        if role == "master":
            raise ApiError(
                400, "Bad Request", "Creating master nodegroups is currently not supported."
            )
        node_count = int(body.get("node_count", 1))
        min_count = int(body.get("min_node_count", 0))
        max_count = body.get("max_node_count")
        floor = 0 if version >= (1, 10) else 1
        if node_count < floor:
            raise ApiError(400, "Bad Request", f"node_count must be at least {floor}.")
        probe = {
            "name": name,
            "node_count": node_count,
            "min_node_count": min_count,
            "max_node_count": None if max_count is None else int(max_count),
        }
        validate_node_counts(probe)
        flavor = body.get("flavor_id") or cluster["flavor_id"]
        self.check_flavor(flavor)
        labels = body.get("labels")
        merge = bool(body.get("merge_labels", False))
        if labels is None:
            effective = dict(cluster["labels"])
        else:
            labels = {str(k): str(v) for k, v in labels.items()}
            effective = {**cluster["labels"], **labels} if merge else labels
        ng = self._new_nodegroup(cluster, name, role, flavor, node_count, effective, merge)
        ng["min_node_count"] = min_count
        ng["max_node_count"] = probe["max_node_count"]
        if body.get("image_id"):
            ng["image_id"] = body["image_id"]
        if body.get("docker_volume_size"):
            ng["docker_volume_size"] = body["docker_volume_size"]
        if version >= (1, 14):
            ng["node_labels"] = dict(body.get("node_labels") or {})
            ng["node_taints"] = list(body.get("node_taints") or [])
        with self.lock:
            cluster["nodegroups"][ng["uuid"]] = ng
            cluster["status"] = "UPDATE_IN_PROGRESS"
        self.save()

        def run() -> None:
            self._sleep(self.config.delays.nodegroup_create)
            reason = self.faults.nodegroup_failure(name)
            error = None
            if reason is None:
                # Nodes register before the nodegroup reports COMPLETE, as with Heat.
                with self.lock:
                    nodes = self._nodes(cluster)
                error = self._apply_nodes(cluster, nodes)
            with self.lock:
                if ng["uuid"] not in cluster["nodegroups"]:
                    return
                if reason is not None or error is not None:
                    ng["status"] = "CREATE_FAILED"
                    ng["status_reason"] = reason or error
                else:
                    ng["status"] = "CREATE_COMPLETE"
                    ng["status_reason"] = "Stack CREATE completed successfully"
                    ng["version"] = cluster.get("coe_version")
                self._settle(cluster, None)

        self._spawn(run)
        return ng

    def patch_nodegroup(
        self, cluster: dict[str, Any], ng: dict[str, Any], ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        for op in ops:
            if op.get("path") not in ("/min_node_count", "/max_node_count"):
                raise ApiError(
                    400,
                    "Bad Request",
                    f"'{op.get('path')}' is an internal attribute and can not be updated",
                )
        updated = apply_json_patch(ng, ops, readonly=set())
        validate_node_counts(updated)
        with self.lock:
            busy = str(ng["status"]).endswith(IN_PROGRESS_SUFFIX) or self.busy(cluster)
            if busy or self.faults.take_drop():
                log.info("update of nodegroup %s dropped", ng["name"])
                return dict(ng)  # 202, nothing changes: see resize
            ng["min_node_count"] = updated["min_node_count"]
            ng["max_node_count"] = updated["max_node_count"]
            ng["status"] = "UPDATE_IN_PROGRESS"
            cluster["status"] = "UPDATE_IN_PROGRESS"
        self.save()

        def run() -> None:
            self._sleep(self.config.delays.update)
            with self.lock:
                ng["status"] = "UPDATE_COMPLETE"
                ng["status_reason"] = "Stack UPDATE completed successfully"
                self._settle(cluster, None)

        self._spawn(run)
        return dict(ng)

    def delete_nodegroup(self, cluster: dict[str, Any], ng: dict[str, Any]) -> None:
        if ng["is_default"]:
            raise ApiError(400, "Bad Request", "Deleting a default nodegroup is not supported.")
        with self.lock:
            ng["status"] = "DELETE_IN_PROGRESS"
            cluster["status"] = "UPDATE_IN_PROGRESS"
        self.save()

        def run() -> None:
            self._sleep(self.config.delays.nodegroup_delete)
            with self.lock:
                remaining = [n for n in cluster["nodegroups"].values() if n is not ng]
                nodes = sim_nodes(remaining, self.config.flavors, node_api=True)
            error = self._apply_nodes(cluster, nodes) if cluster.get("api_address") else None
            with self.lock:
                cluster["nodegroups"].pop(ng["uuid"], None)
                self._settle(cluster, error)

        self._spawn(run)

    # -- certificates ---------------------------------------------------------------------

    def _require_ready(self, cluster: dict[str, Any]) -> None:
        if not cluster.get("api_address"):
            raise ApiError(409, "Conflict", f"Cluster {cluster['uuid']} has no certificates yet.")

    def ca(self, ident: str) -> dict[str, Any]:
        cluster = self.find_cluster(ident)
        self._require_ready(cluster)
        return {
            "cluster_uuid": cluster["uuid"],
            "pem": self.backend.ca_pem(cluster["uuid"]).decode(),
        }

    def sign(self, body: dict[str, Any]) -> dict[str, Any]:
        ident = body.get("cluster_uuid") or body.get("bay_uuid")
        csr = body.get("csr")
        if not ident or not csr:
            raise ApiError(400, "Bad Request", "Mandatory fields missing: cluster_uuid, csr")
        cluster = self.find_cluster(str(ident))
        self._require_ready(cluster)
        try:
            pem = self.backend.sign_csr(cluster["uuid"], str(csr).encode())
        except Exception as exc:
            raise ApiError(400, "Bad Request", f"Invalid CSR: {exc}") from exc
        return {"cluster_uuid": cluster["uuid"], "csr": csr, "pem": pem.decode()}


def validate_node_counts(ng: dict[str, Any]) -> None:
    """Magnum's _validate_node_count: NodeGroupInvalidInput, a Conflict (409), same messages."""
    name, count = ng["name"], ng["node_count"]
    low, high = ng["min_node_count"], ng["max_node_count"]

    def invalid(attr: str, expl: str) -> ApiError:
        return ApiError(409, "Conflict", f"{attr} for {name} is invalid ({expl}).")

    if high is not None:
        if high < low:
            raise invalid(
                "max_node_count",
                f"min_node_count ({low}) should be less or equal to max_node_count ({high})",
            )
        if count > high:
            raise invalid(
                "max_node_count",
                f"node_count ({count}) should be less or equal to max_node_count ({high})",
            )
    if low > count:
        raise invalid(
            "min_node_count",
            f"min_node_count ({low}) should be less or equal to node_count ({count})",
        )


def apply_json_patch(
    obj: dict[str, Any], ops: list[dict[str, Any]], readonly: set[str]
) -> dict[str, Any]:
    """The subset of RFC 6902 Magnum accepts on its resources: replace/add/remove, one level
    (plus `/labels/<key>`); `move`/`copy`/`test` are refused like Magnum's JsonPatchType does."""
    result: dict[str, Any] = json.loads(json.dumps(obj))
    if not isinstance(ops, list):
        raise ApiError(400, "Bad Request", "Invalid patch: expected a list of operations")
    for op in ops:
        kind, path = op.get("op"), str(op.get("path", ""))
        if kind not in ("replace", "add", "remove"):
            raise ApiError(400, "Bad Request", f"Invalid patch operation {kind!r} for {path}")
        if path in readonly:
            raise ApiError(
                400, "Bad Request", f"'{path}' is an internal attribute and can not be updated"
            )
        parts = path.strip("/").split("/")
        target = result
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                raise ApiError(400, "Bad Request", f"Invalid patch path {path}")
            target = target[part]
        if kind == "remove":
            target.pop(parts[-1], None)
        else:
            value = op.get("value")
            counts = ("min_node_count", "max_node_count", "node_count")
            if parts[-1] in counts and value is not None:
                value = int(value)
            target[parts[-1]] = value
    return result
