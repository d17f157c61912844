"""The Kubernetes adapter's connection: one place that talks HTTP to the API server.

kfdeploy uses the official `kubernetes` client for what it is good at — reading kubeconfigs
(contexts, exec plugins, tokens, client certificates) and a configured TLS connection pool — and
sends raw API requests through it, because server-side apply, metadata-only LISTs and aggregated
discovery have no typed methods there. Every request goes through `Kube.request`, which
- retries only temporary failures (429 honouring Retry-After, 5xx — a webhook that refuses
  connections answers 500 —, connection errors and resets) with bounded exponential backoff and
  full jitter, logging `attempt n/m`;
- turns everything else into `ApiError` (a `ClusterError`) carrying the server's status, reason
  and message, so callers never see the library's exceptions;
- counts requests by method, which is how `apply` proves a no-op re-apply sent no PATCH.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from kfdeploy import __version__
from kfdeploy.errors import ClusterError

log = logging.getLogger(__name__)

JSON = dict[str, Any]
AGGREGATED_DISCOVERY = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
)
METADATA_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"


class ApiError(ClusterError):
    """The API server refused a request; `status`, `reason` and the server's `message`."""

    def __init__(
        self, message: str, *, status: int | None, reason: str = "", body: JSON | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.reason = reason
        self.body = body or {}
        # The server's own words, without our prefix: per-object reports add their own.
        self.server_message = str(self.body.get("message") or message)

    @property
    def temporary(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class Conflict(ApiError):
    """Server-side apply conflict: another field manager owns fields we set."""


class NotFound(ApiError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter (AWS architecture blog's recommendation)."""

    attempts: int = 8
    base: float = 0.25
    cap: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection(self, namespace: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def path(self, name: str, namespace: str = "") -> str:
        return f"{self.collection(namespace)}/{name}"


@dataclass
class Stats:
    by_method: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    retried: list[str] = field(default_factory=list)  # "METHOD what: message", for reports
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str) -> None:
        with self.lock:
            self.by_method[method] += 1


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Kube:
    """A connection to one cluster: raw requests with retries, discovery, request counts."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
    ) -> None:
        self.api_client = api_client
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.stats = Stats()
        self.discovery = Discovery(self)
        self.host = str(api_client.configuration.host)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        what: str = "",
        retry: bool = True,
        with_status: bool = False,
    ) -> Any:
        """Send one request; JSON response (None when empty). `what` names the object in errors.

        `with_status=True` returns (HTTP status, JSON): server-side apply answers 201 when it
        created the object and 200 when it changed an existing one.
        """
        attempts = self.retry.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                status, data = self._once(
                    method, path, list(query), body, content_type, accept, what
                )
                return (status, data) if with_status else data
            except ApiError as exc:
                if not exc.temporary or attempt == attempts:
                    raise
                if method == "POST" and exc.status is None:
                    # The connection broke with the request possibly processed: a repeated POST
                    # could create twice. Apply (PATCH), GET and DELETE are idempotent; POST is not.
                    raise
                retry_after = exc.body.get("_retry_after") if exc.body else None
                delay = self.retry.delay(attempt, retry_after)
                with self.stats.lock:
                    self.stats.retries += 1
                    self.stats.retried.append(f"{method} {what or path}: {exc.server_message}")
                log.info(
                    "%s %s: attempt %d/%d failed (%s); will retry in %.1fs",
                    method,
                    what or path,
                    attempt,
                    attempts,
                    exc.message,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        content_type: str,
        accept: str,
        what: str,
    ) -> tuple[int, Any]:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method, path, query_params=query, header_params=headers, auth_settings=["BearerToken"]
        )
        _, url, hdrs, _, _ = serialized
        payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        self.stats.count(method)
        try:
            resp = self.api_client.rest_client.pool_manager.request(
                method,
                url,
                body=payload,
                headers=hdrs,
                timeout=urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1]),
                preload_content=True,
                retries=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(
                f"{method} {what or path}: cannot reach the API server {self.host}: {exc}",
                status=None,
            ) from exc
        data = resp.data
        if 200 <= resp.status < 300:
            return resp.status, (json.loads(data) if data else None)
        raise self._error(method, path, what, resp.status, resp.reason or "", data, resp.headers)

    def _error(
        self,
        method: str,
        path: str,
        what: str,
        status: int,
        reason: str,
        data: bytes,
        headers: Mapping[str, str],
    ) -> ApiError:
        try:
            body: JSON = json.loads(data) if data else {}
        except ValueError:
            body = {"message": data[:500].decode(errors="replace")}
        if not isinstance(body, dict):
            body = {"message": str(body)[:500]}
        retry_after = _parse_retry_after(headers.get("Retry-After"))
        if retry_after is not None:
            body["_retry_after"] = retry_after
        message = str(body.get("message") or reason or f"HTTP {status}")
        text = f"{what or f'{method} {path}'}: {message} (HTTP {status})"
        cls = (
            Conflict
            if status == 409 and method == "PATCH"
            else NotFound
            if status == 404
            else ApiError
        )
        return cls(text, status=status, reason=str(body.get("reason") or reason), body=body)

    # -- convenience -------------------------------------------------------------------------

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def get_or_none(self, path: str, **kw: Any) -> Any:
        try:
            return self.request("GET", path, **kw)
        except NotFound:
            return None


class Discovery:
    """Which resources the server has: (group, kind) -> Resource, from aggregated discovery.

    Cached: two requests (`/api`, `/apis`) answer everything on Kubernetes >= 1.30. `invalidate`
    after CRDs are applied; `wait_for` polls until given kinds appear (discovery lags a CRD's
    Established condition by up to a few seconds).
    """

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._by_gk: dict[tuple[str, str], Resource] | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self._by_gk = None

    def resources(self) -> dict[tuple[str, str], Resource]:
        with self._lock:
            if self._by_gk is None:
                self._by_gk = self._load()
            return self._by_gk

    def find(self, group: str, kind: str) -> Resource | None:
        return self.resources().get((group, kind))

    def require(self, group: str, kind: str, what: str = "") -> Resource:
        res = self.find(group, kind)
        if res is None:
            self.invalidate()
            res = self.find(group, kind)
        if res is None:
            gk = f"{kind}.{group}" if group else kind
            raise ClusterError(
                f"{what or gk}: the cluster does not serve kind {gk} (no CRD installed for it?)",
                status=404,
            )
        return res

    def _load(self) -> dict[tuple[str, str], Resource]:
        out: dict[tuple[str, str], Resource] = {}
        for root in ("/api", "/apis"):
            data = self.kube.get(root, accept=AGGREGATED_DISCOVERY)
            if data.get("kind") == "APIGroupDiscoveryList":
                for group in data.get("items") or []:
                    gname = str(group.get("metadata", {}).get("name", ""))
                    # The first version listed is the preferred one.
                    for ver in reversed(group.get("versions") or []):
                        for r in ver.get("resources") or []:
                            rk = r.get("responseKind") or {}
                            kind = str(rk.get("kind") or "")
                            if not kind or "/" in str(r.get("resource", "")):
                                continue
                            out[(gname, kind)] = Resource(
                                gname,
                                str(ver["version"]),
                                kind,
                                str(r["resource"]),
                                r.get("scope") == "Namespaced",
                            )
            else:
                out.update(self._legacy(root, data))
        return out

    def _legacy(self, root: str, data: JSON) -> dict[tuple[str, str], Resource]:
        # Servers before aggregated discovery: one request per group version.
        out: dict[tuple[str, str], Resource] = {}
        if root == "/api":
            gvs = [("", v) for v in data.get("versions") or []]
        else:
            gvs = [
                (str(g["name"]), str(g["preferredVersion"]["version"]))
                for g in data.get("groups") or []
            ]
        for group, version in gvs:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            for r in self.kube.get(path).get("resources") or []:
                if "/" in str(r["name"]):
                    continue
                out[(group, str(r["kind"]))] = Resource(
                    group, version, str(r["kind"]), str(r["name"]), bool(r["namespaced"])
                )
        return out

    def wait_for(
        self, kinds: Iterable[tuple[str, str]], timeout: float, interval: float = 0.5
    ) -> None:
        from kfdeploy.errors import WaitTimeout

        wanted = set(kinds)
        deadline = time.monotonic() + timeout
        while True:
            self.invalidate()
            missing = wanted - set(self.resources())
            if not missing:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(f"{k}.{g}" if g else k for g, k in missing)[:10])
                raise WaitTimeout(
                    f"discovery still lacks {len(missing)} kind(s) after {timeout:.0f}s: {names}"
                )
            time.sleep(interval)


def connect(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    retry: RetryPolicy | None = None,
    pool_size: int = 16,
) -> Kube:
    """A `Kube` for a kubeconfig file (default: $KUBECONFIG or ~/.kube/config) and context."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=configuration,
        )
    except (ConfigException, OSError, TypeError) as exc:
        where = str(kubeconfig) if kubeconfig else "the default kubeconfig"
        raise ClusterError(f"cannot load {where}: {exc}") from exc
    # kfdeploy retries itself (temporary failures only, logged); urllib3 must not retry silently.
    configuration.retries = False
    configuration.connection_pool_maxsize = pool_size
    api_client = k8s.ApiClient(configuration)
    # Audit logs and managedFields of non-apply requests then name kfdeploy, not the generator.
    api_client.user_agent = f"kfdeploy/{__version__}"
    return Kube(api_client, retry=retry)


def run_concurrently(
    items: list[Any], fn: Callable[[Any], Any], workers: int
) -> list[tuple[Any, Any, BaseException | None]]:
    """(item, result, error) for each item, in input order; errors are collected, not raised."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item: Any) -> tuple[Any, Any, BaseException | None]:
        try:
            return item, fn(item), None
        except Exception as exc:
            return item, None, exc

    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(one, items))
