"""The checks' only door to the cluster: raw JSON REST calls through the `kubernetes` package.

Why the `kubernetes` package and not plain urllib3: it reads every kubeconfig a user may have
(client certificates from Magnum, tokens, exec plugins for OIDC at CERN). Why raw paths and dicts
instead of its generated model classes: checks read a handful of fields from a dozen kinds (some of
them custom resources) and their pure evaluation functions are unit-tested on plain dicts; a model
class that does not know a new field would only get in the way.

Every call carries a request timeout, and every library exception leaves this module as a
`ClusterError` (status kept), so checks and the runner only know kfdeploy's error tree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from kfdeploy.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Query = Mapping[str, str | int]

# Seconds for one API request; a check's deadline bounds how many it makes.
REQUEST_TIMEOUT = 15.0


class Kube(Protocol):
    """What checks need from a cluster. `get` answers None for a missing object."""

    def get(self, path: str, query: Query | None = None) -> JSON | None: ...

    def list(self, path: str, query: Query | None = None) -> list[JSON]: ...

    def create(self, path: str, body: JSON) -> JSON: ...

    def delete(self, path: str, query: Query | None = None) -> None: ...


def path_of(
    api_version: str, plural: str, name: str | None = None, namespace: str | None = None
) -> str:
    """REST path of a collection or an object: `apps/v1`, `deployments`, `x`, `ns` -> /apis/..."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    return base + (f"/{quote(name, safe='')}" if name else "")


class KubeClient:
    """`Kube` over a `kubernetes.client.ApiClient` (thread-safe: checks share one)."""

    def __init__(self, api_client: Any, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self._api = api_client
        self._timeout = request_timeout

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: Path | str,
        context: str | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> KubeClient:
        from kubernetes import config as k8s_config
        from kubernetes.config.config_exception import ConfigException

        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise ConfigError(f"kubeconfig {path} does not exist")
        try:
            api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=context
            )
        except ConfigException as exc:
            raise ConfigError(f"kubeconfig {path}: {exc}") from exc
        return cls(api, request_timeout)

    @property
    def server(self) -> str:
        return str(self._api.configuration.host)

    def request(
        self, method: str, path: str, *, body: JSON | None = None, query: Query | None = None
    ) -> JSON:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        query_params = [(k, str(v)) for k, v in (query or {}).items()]
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        try:
            if hasattr(self._api, "param_serialize"):
                data = self._request(method, path, query_params, headers, body)
            else:
                # older kubernetes packages: the previous generated client's one-call API
                data = self._api.call_api(
                    path,
                    method,
                    query_params=query_params,
                    header_params=headers,
                    body=body,
                    auth_settings=["BearerToken"],
                    response_type="object",
                    _return_http_data_only=True,
                    _preload_content=True,
                    _request_timeout=self._timeout,
                )
        except ApiException as exc:
            raise ClusterError(
                f"{method} {path}: {exc.status} {_message(exc.body) or exc.reason}",
                status=exc.status,
            ) from exc
        except (HTTPError, OSError) as exc:
            raise ClusterError(f"{method} {path}: cannot reach the API server: {exc}") from exc
        return data if isinstance(data, dict) else {}

    def _request(
        self,
        method: str,
        path: str,
        query_params: list[tuple[str, str]],
        headers: dict[str, str],
        body: JSON | None,
    ) -> Any:
        """Newer kubernetes packages: serialize (applies auth, refreshes exec tokens), send, decode."""
        import json

        method, url, headers, body_out, post = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query_params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self._api.call_api(
            method,
            url,
            header_params=headers,
            body=body_out,
            post_params=post,
            _request_timeout=self._timeout,
        )
        raw = resp.read() or b""
        if not 200 <= resp.status <= 299:
            raise ClusterError(
                f"{method} {path}: {resp.status} {_message(raw) or resp.reason}", status=resp.status
            )
        return json.loads(raw) if raw else {}

    def get(self, path: str, query: Query | None = None) -> JSON | None:
        try:
            return self.request("GET", path, query=query)
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, query: Query | None = None) -> list[JSON]:
        items = self.request("GET", path, query=query).get("items") or []
        return [i for i in items if isinstance(i, dict)]

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def delete(self, path: str, query: Query | None = None) -> None:
        try:
            self.request("DELETE", path, query=query)
        except ClusterError as exc:
            if exc.status != 404:
                raise

    def close(self) -> None:
        self._api.close()


def _message(body: Any) -> str:
    """The `message` of a Kubernetes Status body, if the body is one."""
    import json

    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return str(body[:200])
    if isinstance(body, dict):
        return str(body.get("message") or "")
    return ""
