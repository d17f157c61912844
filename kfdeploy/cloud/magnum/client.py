"""openstacksdk adapter for Magnum: connection, one call per API operation, errors, retries.

Why each workaround (see docs on Magnum in the shared docs, verified against openstacksdk 4.x):
- No openstacksdk resource sets a max microversion, so keystoneauth sends no version header and
  Magnum runs the request at 1.1 (406 for resize, upgrade, nodegroups). We pin
  `OpenStack-API-Version: container-infra 1.10` on the proxy's `additional_headers`, which
  keystoneauth applies to every request of the proxy before its own microversion logic (and with
  the legacy service name Magnum < 22 requires; keystoneauth would write the official one).
- `Cluster.resize()`/`upgrade()` index a `requests.Response` like a dict (TypeError): we POST the
  actions ourselves and read the JSON.
- `Resource.commit()` builds its JSON-patch with jsonpatch.make_patch, which may emit `move`/`copy`
  operations Magnum refuses (400): we send explicit `replace` operations.
- The SDK's exception text does not include Magnum's `{"errors": [...]}` explanation: we parse
  `exc.response` ourselves.
- `Cluster.status_reason` maps to the body key `reason` in the SDK; we read cluster state from the
  raw JSON body so status_reason and faults come straight from Magnum.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kfdeploy.errors import CloudError, ConfigError, KfdeployError
from kfdeploy.logs import SecretRedactor

log = logging.getLogger(__name__)

MICROVERSION = "1.10"
VERSION_HEADER = "OpenStack-API-Version"
VERSION_VALUE = f"container-infra {MICROVERSION}"

T = TypeVar("T")


@dataclass
class CallSettings:
    """Retries of temporary failures (5xx, 429, connection errors); 4xx never retried."""

    retries: int = 4
    retry_delay: float = 2.0
    retry_delay_max: float = 30.0

    @classmethod
    def from_env(cls) -> CallSettings:
        """Defaults, or KFDEPLOY_MAGNUM_RETRIES / KFDEPLOY_MAGNUM_RETRY_DELAY (tests shrink them)."""
        settings = cls()
        if value := os.environ.get("KFDEPLOY_MAGNUM_RETRIES"):
            settings.retries = int(value)
        if value := os.environ.get("KFDEPLOY_MAGNUM_RETRY_DELAY"):
            settings.retry_delay = float(value)
        return settings


def magnum_detail(response: Any) -> str | None:
    """The explanation in a Magnum (`{"errors": [...]}`) or Keystone (`{"error": {...}}`) body."""
    if response is None:
        return None
    try:
        body = response.json()
    except Exception:
        text = getattr(response, "text", "") or ""
        return text.strip()[:300] or None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for e in errors:
                if isinstance(e, dict):
                    detail = str(e.get("detail") or "").strip()
                    title = str(e.get("title") or "").strip()
                    parts.append(detail or title)
            return "; ".join(p for p in parts if p) or None
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("title") or "") or None
    return None


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def is_temporary(exc: BaseException) -> bool:
    from keystoneauth1 import exceptions as ks

    if isinstance(exc, (ks.ConnectFailure, ks.ConnectTimeout, ks.RetriableConnectionFailure)):
        return True
    status = _status_of(exc)
    return status is not None and (status >= 500 or status == 429)


def to_cloud_error(exc: BaseException, doing: str, cloud: str | None) -> KfdeployError:
    """One clear line for a library exception, keeping the HTTP status."""
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as osx

    where = f"cloud {cloud!r}" if cloud else "the cloud"
    if isinstance(exc, KfdeployError):
        return exc
    if isinstance(exc, (ks.ConnectFailure, ks.ConnectTimeout)):
        return CloudError(
            f"{doing}: cannot reach {where}: {exc}",
            hint="check the auth_url in clouds.yaml and your network",
        )
    if isinstance(exc, (ks.EndpointNotFound, osx.ServiceDiscoveryException)):
        return CloudError(f"{doing}: {where} has no container-infra (Magnum) endpoint: {exc}")
    status = _status_of(exc)
    detail = magnum_detail(getattr(exc, "response", None)) or getattr(exc, "details", None)
    detail = str(detail or exc).strip()
    if status == 401:
        return CloudError(
            f"{doing}: authentication to {where} failed: {detail}",
            status=401,
            hint="check the credentials in clouds.yaml (or OS_* variables)",
        )
    if status == 403 and ("limit exceeded" in detail.lower() or "quota" in detail.lower()):
        return CloudError(
            f"{doing}: quota exceeded on {where}: {detail}",
            status=403,
            hint="delete unused clusters or ask for a quota increase",
        )
    if status == 406:
        return CloudError(
            f"{doing}: Magnum refused the API microversion: {detail}",
            status=406,
            hint=f"kfdeploy needs Magnum API {MICROVERSION} or later",
        )
    if status is not None:
        return CloudError(f"{doing}: Magnum answered {status}: {detail}", status=status)
    return CloudError(f"{doing}: {type(exc).__name__}: {detail}")


def connect(cloud: str | None, clouds_file: Path | None) -> Any:
    """An openstack Connection for `cloud` from clouds.yaml (or `clouds_file`), OS_CLOUD or OS_*
    variables; application credentials work like any other auth type."""
    region = load_region(cloud, clouds_file)
    auth = region.config.get("auth") or {}
    for key in ("password", "application_credential_secret", "token"):
        SecretRedactor.register(auth.get(key))
    return new_connection(region)


@contextlib.contextmanager
def _quiet_sdk() -> Iterator[None]:
    # openstacksdk 4.x warns on its own internal calls: about InfluxDB whenever it builds a cloud
    # region (its parsed metrics config is a dict of Nones, truthy even when nothing is
    # configured), and RemovedInSDK50Warning on every proxy request (it passes a parameter it
    # deprecated to itself). Both are PendingDeprecationWarnings nobody using the SDK can act on;
    # under `-W error` they would break every call, so they are silenced around SDK calls only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=r"openstack\.")
        warnings.filterwarnings("ignore", message="Support for InfluxDB")
        yield


def load_region(cloud: str | None, clouds_file: Path | None) -> Any:
    from openstack import config as occ
    from openstack import exceptions as osx

    try:
        with _quiet_sdk():
            loader = (
                occ.OpenStackConfig(config_files=[str(clouds_file)])
                if clouds_file
                else (occ.OpenStackConfig())
            )
            return loader.get_one(cloud=cloud)
    except (osx.ConfigException, KeyError) as exc:
        where = f" in {clouds_file}" if clouds_file else ""
        raise ConfigError(
            f"cannot load cloud {cloud!r}{where}: {exc}",
            hint="set cluster.cloud to a clouds.yaml cloud, or OS_CLOUD",
        ) from exc


def new_connection(region: Any) -> Any:
    from openstack import connection

    with _quiet_sdk():
        return connection.Connection(config=region)


def magnum_proxy(conn: Any) -> Any:
    proxy = conn.container_infrastructure_management
    proxy.additional_headers[VERSION_HEADER] = VERSION_VALUE
    return proxy


class MagnumClient:
    """The Magnum calls kfdeploy makes, each returning plain dicts and raising CloudError."""

    def __init__(
        self,
        conn: Any,
        cloud: str | None = None,
        settings: CallSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn = conn
        self.cloud = cloud
        self.settings = settings or CallSettings.from_env()
        self._sleep = sleep
        # Building the proxy authenticates and reads the catalog: failures here are the usual
        # "wrong password" / "no Magnum in this cloud" errors, so they go through `call`.
        self.proxy = self.call(f"connect to cloud {cloud!r}", lambda: magnum_proxy(conn))

    # -- plumbing -------------------------------------------------------------------------

    def call(
        self, doing: str, fn: Callable[[], T], recover: Callable[[], T | None] | None = None
    ) -> T:
        """Run `fn`, retrying temporary failures with backoff; `recover` finds the result of a
        create that may have succeeded although its answer was lost."""
        delay = self.settings.retry_delay
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with _quiet_sdk():
                    return fn()
            except Exception as exc:
                if not is_temporary(exc) or attempt == attempts:
                    raise to_cloud_error(exc, doing, self.cloud) from exc
                log.warning(
                    "%s: attempt #%d/%d failed (%s); will retry in %.1fs",
                    doing,
                    attempt,
                    attempts,
                    to_cloud_error(exc, doing, self.cloud),
                    delay,
                )
                self._sleep(delay)
                delay = min(delay * 2, self.settings.retry_delay_max)
                if recover is not None:
                    try:
                        found = recover()
                    except Exception:
                        found = None
                    if found is not None:
                        return found
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        from openstack import exceptions as osx

        kwargs: dict[str, Any] = {"headers": {"Accept": "application/json"}}
        if body is not None:
            kwargs["json"] = body
        response = self.proxy.request(path, method, **kwargs)
        osx.raise_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def request(self, doing: str, method: str, path: str, body: Any = None) -> Any:
        return self.call(doing, lambda: self._request(method, path, body))

    # -- templates ------------------------------------------------------------------------

    def templates_named(self, name: str) -> list[dict[str, Any]]:
        data = self.request("list cluster templates", "GET", "/clustertemplates")
        return [t for t in data.get("clustertemplates", []) if t.get("name") == name]

    def template_by_id(self, uuid: str) -> dict[str, Any] | None:
        from openstack import exceptions as osx

        try:
            return dict(
                self.call(
                    f"get cluster template {uuid}",
                    lambda: self._request("GET", f"/clustertemplates/{uuid}"),
                )
            )
        except CloudError as exc:
            if isinstance(exc.__cause__, osx.NotFoundException):
                return None
            raise

    def create_template(self, body: dict[str, Any]) -> str:
        def create() -> str:
            return str(self.proxy.create_cluster_template(**body).id)

        def recover() -> str | None:
            found = self.templates_named(body["name"])
            return str(found[0]["uuid"]) if found else None

        return self.call(f"create cluster template {body['name']}", create, recover)

    def delete_template(self, uuid: str) -> None:
        self.call(
            f"delete cluster template {uuid}",
            lambda: self.proxy.delete_cluster_template(uuid, ignore_missing=True),
        )

    # -- clusters -------------------------------------------------------------------------

    def find_cluster(self, name: str) -> dict[str, Any] | None:
        """The cluster named `name` (full detail), None if absent; two of them is an error."""
        clusters = self.call(
            "list clusters", lambda: [c.to_dict(computed=False) for c in self.proxy.clusters()]
        )
        matches = [c for c in clusters if c.get("name") == name]
        if len(matches) > 1:
            raise CloudError(
                f"{len(matches)} clusters are named {name!r} in cloud {self.cloud!r}; "
                "kfdeploy needs the name to be unique",
                status=409,
            )
        if not matches:
            return None
        return self.get_cluster(str(matches[0].get("uuid") or matches[0].get("id")))

    def get_cluster(self, uuid: str) -> dict[str, Any]:
        # Raw body: status_reason and faults exactly as Magnum sent them.
        return dict(self.request(f"get cluster {uuid}", "GET", f"/clusters/{uuid}"))

    def get_cluster_or_none(self, uuid: str) -> dict[str, Any] | None:
        try:
            return self.get_cluster(uuid)
        except CloudError as exc:
            if exc.status == 404:
                return None
            raise

    def create_cluster(self, body: dict[str, Any]) -> str:
        def create() -> str:
            return str(self.proxy.create_cluster(**body).id)

        def recover() -> str | None:
            found = self.find_cluster(body["name"])
            return str(found["uuid"]) if found else None

        return self.call(f"create cluster {body['name']}", create, recover)

    def delete_cluster(self, uuid: str) -> None:
        self.call(
            f"delete cluster {uuid}", lambda: self.proxy.delete_cluster(uuid, ignore_missing=True)
        )

    def resize(self, cluster: str, nodegroup: str, node_count: int) -> None:
        # Our own POST: openstacksdk's Cluster.resize() cannot read the answer (see module doc).
        self.request(
            f"resize nodegroup {nodegroup} to {node_count}",
            "POST",
            f"/clusters/{cluster}/actions/resize",
            {"node_count": node_count, "nodegroup": nodegroup},
        )

    def upgrade(self, cluster: str, template_uuid: str, nodegroup: str | None = None) -> None:
        body: dict[str, Any] = {"cluster_template": template_uuid, "max_batch_size": 1}
        if nodegroup:
            body["nodegroup"] = nodegroup
        self.request(
            f"upgrade {'nodegroup ' + nodegroup if nodegroup else 'cluster'}",
            "POST",
            f"/clusters/{cluster}/actions/upgrade",
            body,
        )

    # -- nodegroups -----------------------------------------------------------------------

    def nodegroups(self, cluster: str) -> list[dict[str, Any]]:
        """Every nodegroup of `cluster` in full detail (min/max, labels, status_reason)."""
        from kfdeploy.cloud.magnum.resources import NodeGroup

        summary = self.call(
            f"list nodegroups of {cluster}",
            lambda: [
                ng.to_dict(computed=False) for ng in self.proxy._list(NodeGroup, cluster_id=cluster)
            ],
        )
        return [self.get_nodegroup(cluster, str(s["id"] or s["name"])) or s for s in summary]

    def get_nodegroup(self, cluster: str, ident: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.request(
                    f"get nodegroup {ident}", "GET", f"/clusters/{cluster}/nodegroups/{ident}"
                )
            )
        except CloudError as exc:
            if exc.status == 404:
                return None
            raise

    def create_nodegroup(self, cluster: str, body: dict[str, Any]) -> dict[str, Any]:
        from kfdeploy.cloud.magnum.resources import NodeGroup

        def create() -> dict[str, Any]:
            ng = self.proxy._create(NodeGroup, cluster_id=cluster, **body)
            return dict(ng.to_dict(computed=False))

        def recover() -> dict[str, Any] | None:
            return self.get_nodegroup(cluster, body["name"])

        return self.call(f"create nodegroup {body['name']}", create, recover)

    def update_nodegroup_bounds(
        self, cluster: str, nodegroup: str, low: int, high: int | None
    ) -> None:
        ops: list[dict[str, Any]] = [
            {"op": "replace", "path": "/min_node_count", "value": low},
            {"op": "replace", "path": "/max_node_count", "value": high},
        ]
        self.request(
            f"update bounds of nodegroup {nodegroup}",
            "PATCH",
            f"/clusters/{cluster}/nodegroups/{nodegroup}",
            ops,
        )

    def delete_nodegroup(self, cluster: str, nodegroup: str) -> None:
        from kfdeploy.cloud.magnum.resources import NodeGroup

        self.call(
            f"delete nodegroup {nodegroup}",
            lambda: self.proxy._delete(
                NodeGroup, nodegroup, cluster_id=cluster, ignore_missing=True
            ),
        )

    # -- certificates ---------------------------------------------------------------------

    def cluster_ca(self, cluster: str) -> str:
        cert = self.call("get the cluster CA", lambda: self.proxy.get_cluster_certificate(cluster))
        return str(cert.pem)

    def sign_csr(self, cluster: str, csr_pem: str) -> str:
        cert = self.call(
            "sign the client certificate",
            lambda: self.proxy.create_cluster_certificate(cluster_uuid=cluster, csr=csr_pem),
        )
        return str(cert.pem)
