"""The Magnum provider: observe the cloud, plan, apply with waits and rollback, status, kubeconfig.

Apply never trusts a 202: Magnum hands resizes and nodegroup updates to its conductor, which may
drop them when the cluster is busy, so every change is verified by re-reading state, and
re-issued (a bounded number of times) when the cloud settled without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfdeploy.cloud.magnum.client import CallSettings, MagnumClient, connect
from kfdeploy.cloud.magnum.kubeconfig import kubeconfig_document, make_admin_csr, write_private_yaml
from kfdeploy.cloud.magnum.waits import WaitSettings, poll_until
from kfdeploy.cloud.plan import (
    FAILED_STATES,
    Change,
    ClusterPlan,
    Observed,
    ObservedCluster,
    ObservedNodeGroup,
    ObservedTemplate,
    cluster_body,
    nodegroup_body,
    plan_cluster,
    template_body,
)
from kfdeploy.cloud.provider import (
    ApplyResult,
    ClusterStatus,
    NodeGroupStatus,
    Progress,
    no_progress,
)
from kfdeploy.config.model import Environment, NodeGroup
from kfdeploy.errors import CloudError, ConfigError, GuardError, KfdeployError

log = logging.getLogger(__name__)


def _busy(status: str | None) -> bool:
    return bool(status) and str(status).endswith("_IN_PROGRESS")


@dataclass
class _Created:
    """What this apply created, for rollback when a later step fails."""

    template: tuple[str, str] | None = None  # (uuid, name)
    cluster: tuple[str, str] | None = None
    nodegroups: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return self.template is None and self.cluster is None and not self.nodegroups


class MagnumProvider:
    name = "magnum"

    def __init__(
        self,
        env: Environment,
        *,
        cloud: str | None = None,
        clouds_file: Path | None = None,
        waits: WaitSettings | None = None,
        calls: CallSettings | None = None,
        connection: Any = None,
    ) -> None:
        if env.cluster.provider != "magnum":
            raise ConfigError(f"environment {env.name} does not use the magnum provider")
        self.env = env
        self.cloud = cloud if cloud is not None else env.cluster.cloud
        self.clouds_file = clouds_file
        self.waits = waits or WaitSettings.from_env()
        self._calls = calls
        self._conn = connection
        self._client: MagnumClient | None = None

    @property
    def client(self) -> MagnumClient:
        if self._client is None:
            conn = self._conn or connect(self.cloud, self.clouds_file)
            self._client = MagnumClient(conn, self.cloud, self._calls)
        return self._client

    def _check_env(self, env: Environment) -> None:
        if env.name != self.env.name:
            raise GuardError(
                f"this provider was made for environment {self.env.name}, not {env.name}"
            )

    # -- observe + plan -------------------------------------------------------------------

    def observe(self) -> Observed:
        cluster_section = self.env.cluster
        assert cluster_section.template is not None
        name = self.env.cluster_name
        templates = [
            _template(t) for t in self.client.templates_named(cluster_section.template.name)
        ]
        raw = self.client.find_cluster(name)
        if raw is None:
            return Observed(tuple(templates), None)
        template_name = next(
            (t.name for t in templates if t.uuid == raw["cluster_template_id"]), None
        )
        if template_name is None:
            current = self.client.template_by_id(str(raw["cluster_template_id"]))
            template_name = current.get("name") if current else None
        groups = tuple(_nodegroup(g) for g in self.client.nodegroups(str(raw["uuid"])))
        return Observed(
            tuple(templates),
            ObservedCluster(
                uuid=str(raw["uuid"]),
                name=str(raw["name"]),
                status=str(raw.get("status")),
                status_reason=raw.get("status_reason"),
                template_id=str(raw["cluster_template_id"]),
                template_name=template_name,
                api_address=raw.get("api_address"),
                master_count=int(raw.get("master_count") or 1),
                nodegroups=groups,
                coe_version=raw.get("coe_version"),
            ),
        )

    def plan(self, env: Environment, *, prune: bool = False) -> ClusterPlan:
        self._check_env(env)
        return plan_cluster(
            env.cluster, env.cluster_name, self.observe(), environment=env.name, prune=prune
        )

    # -- apply ----------------------------------------------------------------------------

    def apply(
        self, plan: ClusterPlan, progress: Progress = no_progress, *, keep_failed: bool = False
    ) -> ApplyResult:
        if plan.cluster_name != self.env.cluster_name:
            raise GuardError(
                f"plan is for cluster {plan.cluster_name}, "
                f"environment {self.env.name} owns {self.env.cluster_name}"
            )
        if plan.blockers:
            raise CloudError("cannot apply: " + "; ".join(plan.blockers))
        result = ApplyResult()
        if plan.is_noop:
            progress(f"cluster {plan.cluster_name}: no changes")
            return result
        created = _Created()
        try:
            self._run(plan.changes, created, result, progress)
            # Converge: whatever the cloud silently dropped shows up in a fresh plan.
            for _ in range(2):
                follow = self.plan(
                    self.env, prune=any(c.action == "delete-nodegroup" for c in plan.changes)
                )
                if follow.blockers:
                    raise CloudError("after apply: " + "; ".join(follow.blockers))
                if not follow.changes:
                    break
                progress(
                    f"cluster {plan.cluster_name}: {len(follow.changes)} change(s) did not "
                    "take; applying again"
                )
                self._run(follow.changes, created, result, progress)
            else:
                raise CloudError(
                    f"cluster {plan.cluster_name} did not converge to the "
                    "environment after 3 passes"
                )
        except KfdeployError as exc:
            if created.empty():
                raise
            if keep_failed:
                kept = _describe(created)
                exc.message += f"; kept for inspection (--keep-failed): {kept}"
                raise
            try:
                result.rolled_back = self._rollback(created, progress)
            except KfdeployError as rb:
                exc.message += f"; rollback failed too: {rb.message}"
                raise exc from None
            exc.message += "; rolled back: " + ", ".join(result.rolled_back)
            raise
        return result

    def _run(
        self,
        changes: tuple[Change, ...],
        created: _Created,
        result: ApplyResult,
        progress: Progress,
    ) -> None:
        for change in changes:
            log.info("cluster %s: applying %s", self.env.cluster_name, change.describe())
            progress(f"applying: {change.describe()}")
            handler = getattr(self, "_do_" + change.action.replace("-", "_"))
            handler(change, created, progress)
            result.applied.append(change)

    def _group(self, name: str) -> NodeGroup:
        section = self.env.cluster
        for group in [section.workers, *section.nodegroups]:
            if group is not None and group.name == name:
                return group
        raise ConfigError(f"nodegroup {name} is not in environment {self.env.name}")

    def _template_uuid(self, name: str, created: _Created) -> str:
        if created.template and created.template[1] == name:
            return created.template[0]
        found = self.client.templates_named(name)
        if not found:
            raise CloudError(f"cluster template {name!r} not found in cloud {self.cloud!r}")
        if len(found) > 1:
            raise CloudError(
                f"{len(found)} cluster templates are named {name!r}; "
                "kfdeploy needs the name to be unique"
            )
        return str(found[0]["uuid"])

    def _cluster_uuid(self, created: _Created) -> str:
        if created.cluster:
            return created.cluster[0]
        raw = self.client.find_cluster(self.env.cluster_name)
        if raw is None:
            raise CloudError(f"cluster {self.env.cluster_name} not found")
        return str(raw["uuid"])

    def _do_create_template(self, change: Change, created: _Created, progress: Progress) -> None:
        body = template_body(self.env.cluster)
        uuid = self.client.create_template(body)
        created.template = (uuid, body["name"])
        progress(f"template {body['name']}: created ({uuid})")

    def _do_create_cluster(self, change: Change, created: _Created, progress: Progress) -> None:
        section = self.env.cluster
        assert section.template is not None
        body = cluster_body(section, self.env.cluster_name)
        body["cluster_template_id"] = self._template_uuid(section.template.name, created)
        if section.template.keypair:
            body["keypair"] = section.template.keypair
        uuid = self.client.create_cluster(body)
        created.cluster = (uuid, self.env.cluster_name)
        self._wait_cluster(uuid, "CREATE_COMPLETE", section.create_timeout, progress)
        self._wait_api_address(uuid, section.create_timeout, progress)

    def _do_upgrade_cluster(self, change: Change, created: _Created, progress: Progress) -> None:
        uuid = self._cluster_uuid(created)
        template = self._template_uuid(str(change.params["template"]), created)
        for _ in range(self.waits.reissue):
            self._wait_idle(uuid, progress)
            self.client.upgrade(uuid, template)
            raw = self._wait_cluster(
                uuid, None, self.waits.upgrade_timeout, progress, after_change=True
            )
            if raw.get("cluster_template_id") == template:
                return
            progress("upgrade did not take (cluster was busy?); re-issuing")
        raise CloudError(
            f"cluster {self.env.cluster_name}: upgrade to template "
            f"{change.params['template']} did not take effect"
        )

    def _do_upgrade_nodegroup(self, change: Change, created: _Created, progress: Progress) -> None:
        uuid = self._cluster_uuid(created)
        name = str(change.params["nodegroup"])
        template = self._template_uuid(str(change.params["template"]), created)
        for _ in range(self.waits.reissue):
            self._wait_idle(uuid, progress)
            target = self.client.get_cluster(uuid).get("coe_version")
            self.client.upgrade(uuid, template, nodegroup=name)
            ng = self._wait_nodegroup(
                uuid,
                name,
                self.waits.upgrade_timeout,
                progress,
                check=lambda ng: not _busy(ng.get("status")),
            )
            if ng.get("version") == target:
                self._wait_idle(uuid, progress)
                return
            progress(f"nodegroup {name}: upgrade did not take; re-issuing")
        raise CloudError(
            f"nodegroup {name}: upgrade to template {change.params['template']} did not take effect"
        )

    def _do_create_nodegroup(self, change: Change, created: _Created, progress: Progress) -> None:
        group = self._group(str(change.params["nodegroup"]))
        uuid = self._cluster_uuid(created)
        body = nodegroup_body(group)
        timeout = self.waits.nodegroup_timeout
        # Magnum answers 409 until the cluster has an API address: wait for it, then create.
        self._wait_api_address(uuid, self.env.cluster.create_timeout, progress)
        attempts = 0
        while True:
            try:
                self.client.create_nodegroup(uuid, body)
                break
            except CloudError as exc:
                attempts += 1
                text = exc.message.lower()
                not_ready = "api address" in text or "api_address" in text
                if exc.status != 409 or not not_ready or attempts > 20:
                    raise
                progress(f"nodegroup {group.name}: cluster not ready yet ({exc.message}); waiting")
                self._wait_api_address(
                    uuid, self.env.cluster.create_timeout, progress, force_sleep=True
                )
        created.nodegroups.append(group.name)
        self._wait_nodegroup(
            uuid,
            group.name,
            timeout,
            progress,
            check=lambda ng: ng.get("status") == "CREATE_COMPLETE",
        )
        self._wait_idle(uuid, progress)

    def _do_resize_nodegroup(self, change: Change, created: _Created, progress: Progress) -> None:
        uuid = self._cluster_uuid(created)
        name = str(change.params["nodegroup"])
        count = int(change.params["node_count"])
        self._resize(uuid, name, count, progress)

    def _resize(self, uuid: str, name: str, count: int, progress: Progress) -> None:
        self._until_it_takes(
            uuid,
            name,
            lambda: self.client.resize(uuid, name, count),
            lambda ng: ng.get("node_count") == count and not _busy(ng.get("status")),
            f"resize to {count}",
            progress,
        )

    def _until_it_takes(
        self,
        uuid: str,
        name: str,
        issue: Callable[[], object],
        took: Callable[[dict[str, Any]], bool],
        what: str,
        progress: Progress,
    ) -> None:
        """Issue a nodegroup change and wait until the nodegroup shows it; Magnum sometimes
        accepts a change (202) and then does not apply it, so it is re-issued a few times."""
        for _ in range(self.waits.reissue):
            self._wait_idle(uuid, progress)
            issue()
            ng = self._wait_nodegroup(
                uuid,
                name,
                self.waits.resize_timeout,
                progress,
                check=lambda ng: not _busy(ng.get("status")),
                after_change=True,
            )
            if took(ng):
                self._wait_idle(uuid, progress)
                return
            progress(f"nodegroup {name}: {what} did not take; re-issuing")
        raise CloudError(
            f"nodegroup {name}: {what} did not take effect after {self.waits.reissue} attempts"
        )

    def _do_update_nodegroup_bounds(
        self, change: Change, created: _Created, progress: Progress
    ) -> None:
        uuid = self._cluster_uuid(created)
        name = str(change.params["nodegroup"])
        low = int(change.params["min_node_count"])
        high = change.params.get("max_node_count")
        high = None if high is None else int(high)
        self._until_it_takes(
            uuid,
            name,
            lambda: self.client.update_nodegroup_bounds(uuid, name, low, high),
            lambda ng: (ng.get("min_node_count"), ng.get("max_node_count")) == (low, high),
            "bounds update",
            progress,
        )

    def _do_delete_nodegroup(self, change: Change, created: _Created, progress: Progress) -> None:
        uuid = self._cluster_uuid(created)
        name = str(change.params["nodegroup"])
        self._wait_idle(uuid, progress)
        self._delete_nodegroup(uuid, name, progress)

    def _delete_nodegroup(self, uuid: str, name: str, progress: Progress) -> None:
        self.client.delete_nodegroup(uuid, name)
        poll_until(
            f"nodegroup {name} deletion",
            lambda: self.client.get_nodegroup(uuid, name),
            lambda ng: ng is None,
            timeout=self.waits.delete_timeout,
            settings=self.waits,
            describe=lambda ng: "deleted" if ng is None else str(ng.get("status")),
            failed=lambda ng: (
                f"nodegroup {name} deletion failed: {ng.get('status_reason')}"
                if ng and ng.get("status") == "DELETE_FAILED"
                else None
            ),
            progress=progress,
        )
        self._wait_idle(uuid, progress)

    # -- waits ----------------------------------------------------------------------------

    def _cluster_failure(self, raw: dict[str, Any]) -> str:
        faults = raw.get("faults") or {}
        fault_text = "; ".join(f"{k}: {v}" for k, v in faults.items())
        return (
            f"cluster {raw.get('name')} is {raw.get('status')}: "
            f"{raw.get('status_reason') or 'no reason given'}"
            + (f" (faults: {fault_text})" if fault_text else "")
        )

    def _wait_cluster(
        self,
        uuid: str,
        target: str | None,
        timeout: float,
        progress: Progress,
        *,
        after_change: bool = False,
    ) -> dict[str, Any]:
        """Until the cluster reaches `target` (None: any settled state); FAILED raises."""

        def done(raw: dict[str, Any]) -> bool:
            status = raw.get("status")
            if _busy(status):
                return False
            if target is not None:
                return bool(status == target)
            return status not in FAILED_STATES

        def failed(raw: dict[str, Any]) -> str | None:
            return self._cluster_failure(raw) if raw.get("status") in FAILED_STATES else None

        result: dict[str, Any] = poll_until(
            f"cluster {self.env.cluster_name}",
            lambda: self.client.get_cluster(uuid),
            done,
            timeout=timeout,
            settings=self.waits,
            describe=lambda raw: str(raw.get("status")),
            failed=failed,
            progress=progress,
        )
        return result

    def _wait_idle(self, uuid: str, progress: Progress) -> dict[str, Any]:
        """Until the cluster is not busy (mutations on a busy cluster are dropped or refused)."""
        result: dict[str, Any] = poll_until(
            f"cluster {self.env.cluster_name} idle",
            lambda: self.client.get_cluster(uuid),
            lambda raw: not _busy(raw.get("status")),
            timeout=self.waits.upgrade_timeout,
            settings=self.waits,
            describe=lambda raw: str(raw.get("status")),
            progress=lambda _: None,
        )
        return result

    def _wait_api_address(
        self, uuid: str, timeout: float, progress: Progress, *, force_sleep: bool = False
    ) -> None:
        if force_sleep:
            import time

            time.sleep(self.waits.poll)
        poll_until(
            f"cluster {self.env.cluster_name} API address",
            lambda: self.client.get_cluster(uuid),
            lambda raw: bool(raw.get("api_address")),
            timeout=timeout,
            settings=self.waits,
            describe=lambda raw: (
                f"{raw.get('status')}, api_address "
                + ("set" if raw.get("api_address") else "not yet")
            ),
            failed=lambda raw: (
                self._cluster_failure(raw) if raw.get("status") == "CREATE_FAILED" else None
            ),
            progress=progress,
        )

    def _wait_nodegroup(
        self,
        uuid: str,
        name: str,
        timeout: float,
        progress: Progress,
        *,
        check: Any,
        after_change: bool = False,
    ) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            ng = self.client.get_nodegroup(uuid, name)
            if ng is None:
                raise CloudError(
                    f"nodegroup {name} disappeared from cluster {self.env.cluster_name}"
                )
            return ng

        def failed(ng: dict[str, Any]) -> str | None:
            if ng.get("status") not in FAILED_STATES:
                return None
            cluster = self.client.get_cluster(uuid)
            faults = cluster.get("faults") or {}
            extra = "; ".join(f"{k}: {v}" for k, v in faults.items() if k != name)
            return (
                f"nodegroup {name} of cluster {self.env.cluster_name} is {ng.get('status')}: "
                f"{ng.get('status_reason') or 'no reason given'}"
                + (f" (other cluster faults: {extra})" if extra else "")
            )

        result: dict[str, Any] = poll_until(
            f"nodegroup {name}",
            read,
            check,
            timeout=timeout,
            settings=self.waits,
            describe=lambda ng: f"{ng.get('status')}, {ng.get('node_count')} node(s)",
            failed=failed,
            progress=progress,
        )
        return result

    # -- rollback -------------------------------------------------------------------------

    def _rollback(self, created: _Created, progress: Progress) -> list[str]:
        done: list[str] = []
        if created.cluster:
            uuid, name = created.cluster
            progress(f"rolling back: deleting cluster {name}")
            self._delete_cluster(uuid, progress)
            done.append(f"cluster {name}")
        else:
            cluster = self.client.find_cluster(self.env.cluster_name)
            for ng in reversed(created.nodegroups):
                if cluster is None:
                    break
                progress(f"rolling back: deleting nodegroup {ng}")
                self._wait_idle(str(cluster["uuid"]), progress)
                self._delete_nodegroup(str(cluster["uuid"]), ng, progress)
                done.append(f"nodegroup {ng}")
        if created.template:
            uuid, name = created.template
            progress(f"rolling back: deleting template {name}")
            self.client.delete_template(uuid)
            done.append(f"template {name}")
        return done

    def _delete_cluster(self, uuid: str, progress: Progress) -> None:
        self.client.delete_cluster(uuid)
        poll_until(
            f"cluster {self.env.cluster_name} deletion",
            lambda: self.client.get_cluster_or_none(uuid),
            lambda raw: raw is None,
            timeout=self.waits.delete_timeout,
            settings=self.waits,
            describe=lambda raw: "deleted" if raw is None else str(raw.get("status")),
            failed=lambda raw: (
                self._cluster_failure(raw) if raw and raw.get("status") == "DELETE_FAILED" else None
            ),
            progress=progress,
        )

    # -- status, kubeconfig, resize, delete -----------------------------------------------

    def status(self, env: Environment) -> ClusterStatus:
        self._check_env(env)
        raw = self.client.find_cluster(env.cluster_name)
        if raw is None:
            return ClusterStatus(env.cluster_name, self.name, exists=False)
        uuid = str(raw["uuid"])
        template = self.client.template_by_id(str(raw["cluster_template_id"]))
        groups = tuple(
            NodeGroupStatus(
                name=str(g.get("name")),
                role=str(g.get("role")),
                flavor=g.get("flavor_id"),
                node_count=int(g.get("node_count") or 0),
                min_node_count=g.get("min_node_count"),
                max_node_count=g.get("max_node_count"),
                status=g.get("status"),
                status_reason=g.get("status_reason"),
            )
            for g in self.client.nodegroups(uuid)
        )
        return ClusterStatus(
            name=env.cluster_name,
            provider=self.name,
            exists=True,
            status=raw.get("status"),
            status_reason=raw.get("status_reason"),
            health_status=raw.get("health_status"),
            api_address=raw.get("api_address"),
            coe_version=raw.get("coe_version"),
            template=(template or {}).get("name") or str(raw["cluster_template_id"]),
            uuid=uuid,
            faults={str(k): str(v) for k, v in (raw.get("faults") or {}).items()},
            nodegroups=groups,
        )

    def kubeconfig(self, env: Environment, path: Path) -> Path:
        self._check_env(env)
        raw = self.client.find_cluster(env.cluster_name)
        if raw is None:
            raise CloudError(
                f"cluster {env.cluster_name} does not exist; "
                f"run `kfdeploy cluster apply {env.name}` first"
            )
        if not raw.get("api_address"):
            raise CloudError(
                f"cluster {env.cluster_name} has no API address yet (status {raw.get('status')})"
            )
        uuid = str(raw["uuid"])
        template = self.client.template_by_id(str(raw["cluster_template_id"])) or {}
        if template.get("tls_disabled"):
            doc = kubeconfig_document(env.cluster_name, str(raw["api_address"]), None, None, None)
        else:
            ca = self.client.cluster_ca(uuid)
            key_pem, csr_pem = make_admin_csr()
            cert = self.client.sign_csr(uuid, csr_pem.decode())
            doc = kubeconfig_document(env.cluster_name, str(raw["api_address"]), ca, cert, key_pem)
        return write_private_yaml(path, doc)

    def resize(
        self, env: Environment, nodegroup: str, count: int, progress: Progress = no_progress
    ) -> None:
        self._check_env(env)
        raw = self.client.find_cluster(env.cluster_name)
        if raw is None:
            raise CloudError(f"cluster {env.cluster_name} does not exist")
        uuid = str(raw["uuid"])
        if self.client.get_nodegroup(uuid, nodegroup) is None:
            raise CloudError(f"cluster {env.cluster_name} has no nodegroup {nodegroup}", status=404)
        self._resize(uuid, nodegroup, count, progress)

    def delete(self, env: Environment, progress: Progress = no_progress) -> bool:
        self._check_env(env)
        raw = self.client.find_cluster(env.cluster_name)
        if raw is None:
            progress(f"cluster {env.cluster_name} does not exist")
            return False
        self._delete_cluster(str(raw["uuid"]), progress)
        return True


def _describe(created: _Created) -> str:
    parts = []
    if created.cluster:
        parts.append(f"cluster {created.cluster[1]}")
    parts += [f"nodegroup {n}" for n in created.nodegroups if not created.cluster]
    if created.template:
        parts.append(f"template {created.template[1]}")
    return ", ".join(parts)


def _template(raw: dict[str, Any]) -> ObservedTemplate:
    return ObservedTemplate(
        uuid=str(raw["uuid"]),
        name=str(raw["name"]),
        image_id=raw.get("image_id"),
        labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
    )


def _nodegroup(raw: dict[str, Any]) -> ObservedNodeGroup:
    return ObservedNodeGroup(
        name=str(raw.get("name")),
        role=str(raw.get("role") or "worker"),
        flavor=str(raw.get("flavor_id")),
        node_count=int(raw.get("node_count") or 0),
        min_node_count=int(raw.get("min_node_count") or 0),
        max_node_count=None if raw.get("max_node_count") is None else int(raw["max_node_count"]),
        labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
        status=str(raw.get("status")),
        status_reason=raw.get("status_reason"),
        is_default=bool(raw.get("is_default")),
        version=raw.get("version"),
    )
