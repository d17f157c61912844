"""HTTP face of the emulator: Keystone v3 under /identity, Magnum v1 under /magnum, admin under
/_emulator. One threaded stdlib server on 127.0.0.1.

Faithfulness notes (from Magnum's api controllers and keystonemiddleware):
- `GET /magnum/` and `GET /magnum/v1` need no token; everything else in Magnum needs a valid
  `X-Auth-Token` (401 in keystonemiddleware's format otherwise).
- The microversion comes from `OpenStack-API-Version: container-infra X.Y`. A header naming
  another service is ignored (Magnum before 22.0.0), so the request runs at 1.1, where resize
  (1.7), upgrade (1.8) and nodegroups (1.9) answer 406.
- Errors are `{"errors": [{request_id, code, status, title, detail, links}]}`.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import logging
import secrets
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from kfdeploy.files import write_atomic
from kfdeploy.sim.magnum.config import (
    DEFAULT_PROJECT,
    LOCAL_CLOUD,
    MIN_VERSION,
    REGION,
    EmulatorConfig,
    FaultState,
    parse_version,
)
from kfdeploy.sim.magnum.state import ApiError, MagnumState, make_backend

log = logging.getLogger(__name__)

SERVICE = "container-infra"
OFFICIAL_SERVICE = "container-infrastructure-management"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_CLUSTER_SUMMARY = (
    "uuid",
    "name",
    "cluster_template_id",
    "keypair",
    "node_count",
    "master_count",
    "create_timeout",
    "stack_id",
    "status",
    "health_status",
    "labels",
    "master_flavor_id",
    "flavor_id",
    "docker_volume_size",
    "project_id",
)
_NODEGROUP_SUMMARY = (
    "uuid",
    "name",
    "flavor_id",
    "node_count",
    "role",
    "is_default",
    "image_id",
    "status",
    "stack_id",
)


def _fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


class Emulator:
    """The emulator: state, faults, tokens, request log and the HTTP server around them."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.faults = FaultState()
        self.faults.update(config.faults)
        self.state = MagnumState(config, self.faults, make_backend(config))
        self.max_version = parse_version(config.max_version)
        self._tokens: dict[str, dict[str, Any]] = {}
        self._tokens_lock = threading.Lock()
        self._requests: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._requests_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Emulator:
        self.state.load()
        server = ThreadingHTTPServer((self.config.host, self.config.port), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Foreground mode (the daemon): serve until `shutdown()` from another thread/signal."""
        self.state.load()
        server = ThreadingHTTPServer((self.config.host, self.config.port), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        server.serve_forever()

    def shutdown(self, destroy_clusters: bool = False) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.state.close()
        if destroy_clusters:
            self.state.destroy_all()

    @property
    def port(self) -> int:
        assert self._server is not None, "emulator not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity/v3"

    @property
    def magnum_url(self) -> str:
        return f"{self.url}/magnum/v1"

    def clouds(self) -> dict[str, Any]:
        """clouds.yaml content: a password cloud and an application-credential cloud."""
        user, password = next(iter(self.config.users.items()))
        cred_id, cred_secret = next(iter(self.config.application_credentials.items()))
        common = {"region_name": REGION, "interface": "public", "identity_api_version": 3}
        return {
            "clouds": {
                LOCAL_CLOUD: {
                    "auth_type": "password",
                    "auth": {
                        "auth_url": self.auth_url,
                        "username": user,
                        "password": password,
                        "project_name": self.config.project,
                        "user_domain_name": "Default",
                        "project_domain_name": "Default",
                    },
                    **common,
                },
                f"{LOCAL_CLOUD}-appcred": {
                    "auth_type": "v3applicationcredential",
                    "auth": {
                        "auth_url": self.auth_url,
                        "application_credential_id": cred_id,
                        "application_credential_secret": cred_secret,
                    },
                    **common,
                },
            }
        }

    def write_clouds_yaml(self, path: Path) -> Path:
        return write_atomic(path, yaml.safe_dump(self.clouds(), sort_keys=False), private=True)

    # -- tokens ---------------------------------------------------------------------------

    def issue_token(self, method: str, user: str) -> tuple[str, dict[str, Any]]:
        token = "gAAAA" + secrets.token_urlsafe(48)
        issued = dt.datetime.now(dt.UTC)
        expires = issued + dt.timedelta(seconds=self.config.token_ttl)
        with self._tokens_lock:
            self._tokens[token] = {"expires": time.time() + self.config.token_ttl, "user": user}
        body = {
            "token": {
                "methods": [method],
                "user": {
                    "id": f"{user}-id",
                    "name": user,
                    "domain": {"id": "default", "name": "Default"},
                    "password_expires_at": None,
                },
                "project": {
                    "id": f"{self.config.project}-id",
                    "name": self.config.project,
                    "domain": {"id": "default", "name": "Default"},
                },
                "roles": [
                    {"id": "member-id", "name": "member"},
                    {"id": "reader-id", "name": "reader"},
                ],
                "catalog": [
                    {
                        "type": "identity",
                        "name": "keystone",
                        "id": "keystone-service",
                        "endpoints": [
                            {
                                "id": "ks-public",
                                "interface": "public",
                                "region": REGION,
                                "region_id": REGION,
                                "url": self.auth_url,
                            },
                        ],
                    },
                    {
                        "type": SERVICE,
                        "name": "magnum",
                        "id": "magnum-service",
                        "endpoints": [
                            {
                                "id": "magnum-public",
                                "interface": "public",
                                "region": REGION,
                                "region_id": REGION,
                                "url": self.magnum_url,
                            },
                        ],
                    },
                ],
                "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                "audit_ids": [secrets.token_urlsafe(12)],
                "is_domain": False,
            }
        }
        if method == "application_credential":
            body["token"]["application_credential"] = {
                "id": user,
                "name": user,
                "restricted": True,
            }
        return token, body

    def valid_token(self, token: str | None) -> bool:
        if not token:
            return False
        with self._tokens_lock:
            info = self._tokens.get(token)
            return info is not None and info["expires"] > time.time()

    def expire_tokens(self) -> int:
        """Revoke every token now (what a token expiry mid-operation looks like to a client)."""
        with self._tokens_lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count

    # -- request log ----------------------------------------------------------------------

    def record(self, method: str, path: str, version_header: str) -> None:
        with self._requests_lock:
            self._requests[(method, path, version_header)] += 1

    def requests(self) -> list[dict[str, Any]]:
        with self._requests_lock:
            return [
                {"method": m, "path": p, "microversion": v, "count": n}
                for (m, p, v), n in sorted(self._requests.items())
            ]

    def reset_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # -- microversions --------------------------------------------------------------------

    def negotiate(self, header: str | None) -> tuple[int, int]:
        services = {SERVICE}
        if self.config.accept_official_service_type:
            services.add(OFFICIAL_SERVICE)
        requested: str | None = None
        for part in (header or "").split(","):
            words = part.strip().split()
            if len(words) == 2 and words[0].lower() in services:
                requested = words[1]
        if requested is None:
            return MIN_VERSION
        if requested.lower() == "latest":
            return self.max_version
        try:
            version = parse_version(requested)
        except Exception:
            version = (-1, -1)
        if not MIN_VERSION <= version <= self.max_version:
            raise ApiError(
                406,
                "Requested microversion is unsupported",
                f"Version {requested} was requested but the minor version is not supported by "
                f"this service. The supported version range is: [{_fmt(MIN_VERSION)}, "
                f"{_fmt(self.max_version)}].",
                code="magnum.microversion-unsupported",
                min_version=_fmt(MIN_VERSION),
                max_version=_fmt(self.max_version),
            )
        return version

    def version_document(self) -> dict[str, Any]:
        return {
            "id": "v1",
            "status": "CURRENT",
            "min_version": _fmt(MIN_VERSION),
            "max_version": _fmt(self.max_version),
            "links": [{"href": f"{self.magnum_url}/", "rel": "self"}],
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "kfdeploy-magnum-emulator/1"
    protocol_version = "HTTP/1.1"

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing -------------------------------------------------------------------------

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "Bad Request", f"Invalid JSON body: {exc}") from exc

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, exc: ApiError, headers: dict[str, str] | None = None) -> None:
        entry = {
            "request_id": f"req-{uuid.uuid4()}",
            "code": exc.extra.pop("code", "client" if exc.status < 500 else "server"),
            "status": exc.status,
            "title": exc.title,
            "detail": exc.detail,
            "links": [],
            **exc.extra,
        }
        self._send(exc.status, {"errors": [entry]}, headers)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        # Read the body before any answer: an early error (401, 406, injected 5xx) must not
        # leave it in the kept-alive connection, where it would corrupt the next request.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path.rstrip("/") or "/"
        version_header = self.headers.get("OpenStack-API-Version") or ""
        em = self.emulator
        if path.startswith("/_emulator"):
            self._admin(path)
            return
        em.record(self.command, path, version_header)
        burst = em.faults.take_http_error(self.command, path)
        if burst is not None:
            self._error(ApiError(burst, HTTPStatus(burst).phrase, "Injected server error."))
            return
        try:
            if path == "/identity" or path.startswith("/identity/"):
                self._keystone(path[len("/identity") :] or "/")
            elif path == "/magnum" or path.startswith("/magnum/"):
                self._magnum(path[len("/magnum") :] or "/", version_header)
            else:
                raise ApiError(404, "Not Found", f"No such resource {path}")
        except ApiError as exc:
            self._error(exc)
        except Exception as exc:  # a bug in the emulator must still answer, as a 500
            log.exception("emulator failed on %s %s", self.command, path)
            self._error(ApiError(500, "Internal Server Error", f"emulator error: {exc}"))

    # -- admin ----------------------------------------------------------------------------

    def _admin(self, path: str) -> None:
        em = self.emulator
        if path == "/_emulator/health":
            self._send(200, {"ok": True, "url": em.url})
        elif path == "/_emulator/requests" and self.command == "GET":
            self._send(200, {"requests": em.requests()})
        elif path == "/_emulator/requests" and self.command == "DELETE":
            em.reset_requests()
            self._send(204)
        elif path == "/_emulator/faults" and self.command == "GET":
            self._send(200, em.faults.snapshot())
        elif path == "/_emulator/faults" and self.command == "POST":
            body = self._body() or {}
            em.faults.update(body)
            self._send(200, em.faults.snapshot())
        elif path == "/_emulator/tokens/expire" and self.command == "POST":
            self._send(200, {"revoked": em.expire_tokens()})
        elif path == "/_emulator/clouds" and self.command == "GET":
            self._send(200, em.clouds())
        else:
            self._send(404, {"error": f"no admin endpoint {self.command} {path}"})

    # -- keystone -------------------------------------------------------------------------

    def _keystone_versions(self) -> dict[str, Any]:
        em = self.emulator
        return {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{em.auth_url}/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }

    def _keystone(self, path: str) -> None:
        em = self.emulator
        if path == "/" and self.command in ("GET", "HEAD"):
            self._send(300, {"versions": {"values": [self._keystone_versions()]}})
            return
        if path == "/v3" and self.command in ("GET", "HEAD"):
            self._send(200, {"version": self._keystone_versions()})
            return
        if path == "/v3/auth/tokens" and self.command == "POST":
            body = self._body() or {}
            identity = (body.get("auth") or {}).get("identity") or {}
            methods = identity.get("methods") or []
            user: str | None = None
            if "password" in methods:
                pw_user = (identity.get("password") or {}).get("user") or {}
                name = pw_user.get("name") or pw_user.get("id")
                if name and em.config.users.get(name) == pw_user.get("password"):
                    user = name
                method = "password"
            elif "application_credential" in methods:
                cred = identity.get("application_credential") or {}
                ident = cred.get("id") or cred.get("name")
                if ident and em.config.application_credentials.get(ident) == cred.get("secret"):
                    user = ident
                method = "application_credential"
            if user is None:
                self._send(
                    401,
                    {
                        "error": {
                            "code": 401,
                            "title": "Unauthorized",
                            "message": "The request you have made requires authentication.",
                        }
                    },
                )
                return
            token, token_body = em.issue_token(method, user)
            self._send(201, token_body, {"X-Subject-Token": token})
            return
        if path == "/v3/auth/tokens" and self.command in ("GET", "HEAD"):
            if em.valid_token(self.headers.get("X-Subject-Token")):
                self._send(200, {"token": {}})
            else:
                self._send(
                    404,
                    {
                        "error": {
                            "code": 404,
                            "title": "Not Found",
                            "message": "Could not find token.",
                        }
                    },
                )
            return
        raise ApiError(404, "Not Found", f"No such identity resource {path}")

    # -- magnum ---------------------------------------------------------------------------

    def _magnum(self, path: str, version_header: str) -> None:
        em = self.emulator
        if path == "/" and self.command in ("GET", "HEAD"):
            self._send(
                200,
                {
                    "name": "OpenStack Magnum API",
                    "description": "Magnum is an OpenStack project which aims to provide container "
                    "cluster management.",
                    "versions": [em.version_document()],
                },
            )
            return
        if path == "/v1" and self.command in ("GET", "HEAD"):
            doc = em.version_document()
            self._send(
                200,
                {
                    **doc,
                    "media_types": [
                        {
                            "base": "application/json",
                            "type": "application/vnd.openstack.magnum.v1+json",
                        }
                    ],
                    "clustertemplates": [
                        {"href": f"{em.magnum_url}/clustertemplates/", "rel": "self"}
                    ],
                    "clusters": [{"href": f"{em.magnum_url}/clusters/", "rel": "self"}],
                    "certificates": [{"href": f"{em.magnum_url}/certificates/", "rel": "self"}],
                },
            )
            return
        if em.faults.take_token_revocation():
            em.expire_tokens()
        if not em.valid_token(self.headers.get("X-Auth-Token")):
            self._send(
                401,
                {
                    "error": {
                        "code": 401,
                        "title": "Unauthorized",
                        "message": "The request you have made requires authentication.",
                    }
                },
                {"WWW-Authenticate": f'Keystone uri="{em.url}/identity"'},
            )
            return
        version = em.negotiate(version_header)
        headers = {
            "OpenStack-API-Minimum-Version": f"{SERVICE} {_fmt(MIN_VERSION)}",
            "OpenStack-API-Maximum-Version": f"{SERVICE} {_fmt(em.max_version)}",
            "OpenStack-API-Version": f"{SERVICE} {_fmt(version)}",
            "Vary": "OpenStack-API-Version",
        }
        try:
            status, body = self._route(
                path[len("/v1") :] if path.startswith("/v1") else "?", version
            )
        except ApiError as exc:
            self._error(exc, headers)
            return
        self._send(status, body, headers)

    def _route(self, path: str, version: tuple[int, int]) -> tuple[int, Any]:
        state = self.emulator.state
        m = self.command
        parts = [p for p in path.split("/") if p]

        def need(minimum: tuple[int, int], what: str) -> None:
            if version < minimum:
                raise ApiError(
                    406,
                    "Not Acceptable",
                    f"Version {_fmt(version)} was requested but the requested API {what} is not "
                    f"supported for this version (needs {_fmt(minimum)} or later).",
                )

        # Magnum checks the microversion (its api_version decorator) before looking anything up.
        if parts[:1] == ["clusters"] and len(parts) >= 3:
            if parts[2] == "nodegroups":
                need((1, 9), "nodegroups")
            elif parts[2:] == ["actions", "resize"]:
                need((1, 7), "resize")
            elif parts[2:] == ["actions", "upgrade"]:
                need((1, 8), "upgrade")

        if parts[:1] == ["clustertemplates"]:
            if len(parts) == 1 and m == "GET":
                with state.lock:
                    return 200, {"clustertemplates": [dict(t) for t in state.templates.values()]}
            if len(parts) == 2 and parts[1] == "detail" and m == "GET":
                with state.lock:
                    return 200, {"clustertemplates": [dict(t) for t in state.templates.values()]}
            if len(parts) == 1 and m == "POST":
                return 201, state.create_template(self._body() or {})
            if len(parts) == 2 and m == "GET":
                return 200, dict(state.find_template(parts[1]))
            if len(parts) == 2 and m == "PATCH":
                return 200, state.patch_template(parts[1], self._body() or [])
            if len(parts) == 2 and m == "DELETE":
                state.delete_template(parts[1])
                return 204, None
        if parts[:1] == ["clusters"]:
            if len(parts) == 1 and m == "GET":
                with state.lock:
                    return 200, {
                        "clusters": [_cluster_view(c, False) for c in state.clusters.values()]
                    }
            if len(parts) == 2 and parts[1] == "detail" and m == "GET":
                with state.lock:
                    return 200, {
                        "clusters": [_cluster_view(c, True) for c in state.clusters.values()]
                    }
            if len(parts) == 1 and m == "POST":
                cluster = state.create_cluster(self._body() or {})
                return 202, {"uuid": cluster["uuid"]}
            if len(parts) >= 2:
                cluster = state.find_cluster(parts[1])
                if len(parts) == 2 and m == "GET":
                    with state.lock:
                        return 200, _cluster_view(cluster, True)
                if len(parts) == 2 and m == "PATCH":
                    state.patch_cluster(parts[1], self._body() or [])
                    return 202, {"uuid": cluster["uuid"]}
                if len(parts) == 2 and m == "DELETE":
                    state.delete_cluster(parts[1])
                    return 204, None
                if parts[2:] == ["actions", "resize"] and m == "POST":
                    body = self._body() or {}
                    if "node_count" not in body:
                        raise ApiError(400, "Bad Request", "Mandatory field missing: node_count")
                    ng = state.find_nodegroup(cluster, body.get("nodegroup") or "default-worker")
                    state.resize(
                        cluster,
                        ng,
                        int(body["node_count"]),
                        list(body.get("nodes_to_remove") or []),
                    )
                    return 202, {"uuid": cluster["uuid"]}
                if parts[2:] == ["actions", "upgrade"] and m == "POST":
                    body = self._body() or {}
                    if not body.get("cluster_template"):
                        raise ApiError(
                            400, "Bad Request", "Mandatory field missing: cluster_template"
                        )
                    state.upgrade(cluster, str(body["cluster_template"]), body.get("nodegroup"))
                    return 202, {"uuid": cluster["uuid"]}
                if len(parts) >= 3 and parts[2] == "nodegroups":
                    return self._nodegroups(cluster, parts[3:], version)
        if parts[:1] == ["certificates"]:
            if len(parts) == 2 and m == "GET":
                return 200, state.ca(parts[1])
            if len(parts) == 1 and m == "POST":
                return 201, state.sign(self._body() or {})
        raise ApiError(404, "Not Found", f"The resource could not be found: {m} /v1{path}")

    def _nodegroups(
        self, cluster: dict[str, Any], rest: list[str], version: tuple[int, int]
    ) -> tuple[int, Any]:
        state = self.emulator.state
        m = self.command
        if not rest and m == "GET":
            role = None
            query = urlsplit(self.path).query
            for item in query.split("&"):
                k, _, v = item.partition("=")
                if k == "role":
                    role = v
            with state.lock:
                return 200, {
                    "nodegroups": [
                        _ng_view(ng, False, version)
                        for ng in cluster["nodegroups"].values()
                        if role is None or ng["role"] == role
                    ]
                }
        if not rest and m == "POST":
            return 202, _ng_view(
                state.create_nodegroup(cluster, self._body() or {}, version), True, version
            )
        if len(rest) == 1:
            ng = state.find_nodegroup(cluster, rest[0])
            if m == "GET":
                with state.lock:
                    return 200, _ng_view(ng, True, version)
            if m == "PATCH":
                return 202, _ng_view(
                    state.patch_nodegroup(cluster, ng, self._body() or []), True, version
                )
            if m == "DELETE":
                state.delete_nodegroup(cluster, ng)
                return 204, None
        raise ApiError(404, "Not Found", "The resource could not be found.")


def _cluster_view(cluster: dict[str, Any], detail: bool) -> dict[str, Any]:
    ngs = list(cluster["nodegroups"].values())
    view = {k: v for k, v in cluster.items() if not k.startswith("_") and k != "nodegroups"}
    view["node_count"] = sum(
        n["node_count"] for n in ngs if n["role"] != "master" and n["is_default"]
    )
    view["master_count"] = sum(n["node_count"] for n in ngs if n["role"] == "master")
    view["links"] = []
    if not detail:
        view = {k: view.get(k) for k in _CLUSTER_SUMMARY}
    copied: dict[str, Any] = json.loads(json.dumps(view))  # no shared mutable state leaks out
    return copied


def _ng_view(ng: dict[str, Any], detail: bool, version: tuple[int, int]) -> dict[str, Any]:
    hidden = {"servers"} if version >= (1, 14) else {"servers", "node_labels", "node_taints"}
    view = {k: v for k, v in ng.items() if k not in hidden}
    if not detail:
        view = {k: view.get(k) for k in _NODEGROUP_SUMMARY}
    else:
        view["links"] = []
    copied: dict[str, Any] = json.loads(json.dumps(view))
    return copied


@contextlib.contextmanager
def running(config: EmulatorConfig, destroy_clusters: bool = True) -> Any:
    """In-process emulator for tests: `with running(cfg) as em: ...`."""
    em = Emulator(config).start()
    try:
        yield em
    finally:
        em.shutdown(destroy_clusters=destroy_clusters)


__all__ = ["DEFAULT_PROJECT", "MUTATING", "Emulator", "running"]
