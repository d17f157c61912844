"""A small JSON client for the simulated cluster's own daemons (fake kubelet, readiness checks).

The simulator needs only raw REST calls with client certificates, status-subresource patches and
watches, and its fake kubelet must start fast and never trip over a model class that does not know
a new field. urllib3 (already a dependency of the `kubernetes` package) gives exactly that.
kfdeploy's cluster adapter is the place for everything richer.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

from kfdeploy.errors import ClusterError

JSON = dict[str, Any]


class KubeApiError(ClusterError):
    """The API server answered with an error status; `body` is its Status object if any."""

    def __init__(
        self, method: str, path: str, status: int, body: JSON | None, text: str = ""
    ) -> None:
        message = (body or {}).get("message") or text[:200] or "no body"
        super().__init__(f"{method} {path}: {status} {message}", status=status)
        self.body = body or {}


class KubeClient:
    def __init__(
        self,
        server: str,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        *,
        timeout: float = 15,
        retries: int = 0,
    ) -> None:
        self.server = server.rstrip("/")
        ctx = ssl.create_default_context(cafile=str(ca_file))
        ctx.load_cert_chain(str(cert_file), str(key_file))
        self._pool = urllib3.PoolManager(
            ssl_context=ctx,
            timeout=urllib3.Timeout(connect=5, read=timeout),
            retries=urllib3.Retry(total=retries, connect=retries, read=0, redirect=0, status=0),
            maxsize=8,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        url = self.server + path + (("?" + urlencode(params)) if params else "")
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers["Content-Type"] = content_type
        # Only override the pool's timeout when asked: urllib3 reads an explicit None as
        # "wait forever", which would hang on a peer that accepts and never answers.
        extra: dict[str, Any] = {}
        if timeout:
            extra["timeout"] = urllib3.Timeout(connect=5, read=timeout)
        resp = self._pool.request(method, url, body=data, headers=headers, **extra)
        text = resp.data.decode("utf-8", errors="replace")
        parsed: JSON | None = None
        if text:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        if resp.status >= 400:
            raise KubeApiError(method, path, resp.status, parsed, text)
        return parsed or {}

    def get(self, path: str, **params: str | int) -> JSON:
        return self.request("GET", path, params=params or None)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create(self, path: str, obj: JSON) -> JSON:
        return self.request("POST", path, obj)

    def merge_patch(self, path: str, patch: JSON) -> JSON:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def strategic_patch(self, path: str, patch: JSON) -> JSON:
        return self.request(
            "PATCH", path, patch, content_type="application/strategic-merge-patch+json"
        )

    def apply(self, path: str, obj: JSON, field_manager: str, force: bool = True) -> JSON:
        params: dict[str, str | int] = {"fieldManager": field_manager}
        if force:
            params["force"] = "true"
        return self.request(
            "PATCH", path, obj, params=params, content_type="application/apply-patch+yaml"
        )

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        try:
            return self.request("DELETE", path, body)
        except KubeApiError as exc:
            if exc.status == 404:
                return {}
            raise

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 60) -> Iterator[JSON]:
        """Yield watch events until the server closes the stream (after `timeout_seconds`)."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        url = self.server + path + "?" + urlencode(params)
        resp = self._pool.request(
            "GET",
            url,
            headers={"Accept": "application/json"},
            preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 15),
        )
        try:
            if resp.status >= 400:
                text = resp.read().decode("utf-8", errors="replace")
                raise KubeApiError("WATCH", path, resp.status, _maybe_json(text), text)
            buf = b""
            for chunk in resp.stream(64 * 1024):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()


def _maybe_json(text: str) -> JSON | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
